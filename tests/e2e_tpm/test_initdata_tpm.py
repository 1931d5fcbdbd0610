"""Init-data end to end on a (software) TPM: `trustee initdata digest --tee tpm` is the PCR 8 the AS accepts.

swtpm + `trustee run` + `trustee guest --initdata-toml FILE`, all real
processes. The init-data names the KBS (aa.toml `[token_configs.kbs] url`),
so the guest is started without `--kbs-url`. Its AA extends PCR 8 with the
digest at start-up and sends the TOML with its evidence; the AS recomputes
the digest and checks PCR 8 (`check_init_data`) before it issues a token, so
a token at all means the binding held. The token's `init_data` claim (PCR 8)
equals what `trustee initdata digest` printed for the same file, and its
`init_data_claims` carry the KBS URL from the TOML.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_tpm.swtpm import Swtpm
from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool

pytest.importorskip("tpm2_pytss")
pytestmark = pytest.mark.e2e

from guest.attesters.tpm import TpmAttester, TpmSettings  # noqa: E402 - after the importorskip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Swtpm, TrusteeRun, Path]]:
    base = tmp_path_factory.mktemp("initdata-tpm")
    tpm = Swtpm(base / "swtpm-state", base / "swtpm.log")
    try:
        server = TrusteeRun(base / "trustee-data", base / "trustee.log")
    except BaseException:
        tpm.stop()
        raise
    yield tpm, server, base
    server.stop()
    tpm.stop()


def token_submod(rest_url: str, out: Path) -> dict[str, Any]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    result = subprocess.run([curl, "-sS", "-o", str(out), "-w", "%{http_code}", f"{rest_url}/aa/token?token_type=kbs"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout == "200", (result.stdout, result.stderr, out.read_bytes()[:2000])
    body = out.read_bytes()
    token = json.loads(body)["token"] if body.startswith(b"{") else body.decode()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    submod: dict[str, Any] = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    return submod


def test_guest_binds_the_printed_pcr8_and_the_as_accepts_it(stack: tuple[Swtpm, TrusteeRun, Path]) -> None:
    tpm, server, base = stack
    init_data = base / "initdata.toml"
    init_data.write_text(f'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"aa.toml" = \'\'\'\n[token_configs.kbs]\n'
                         f'url = "{server.url}"\n\'\'\'\n')
    printed = run_tool("trustee", "initdata", "digest", "--tee", "tpm", str(init_data))
    assert printed.returncode == 0, printed.stderr
    pcr8 = printed.stdout.strip()

    ak = TpmAttester(TpmSettings(tpm.tcti)).get_evidence(b"\x00" * 32)["ak_public"]
    message = base / "rv.json"
    payload = base64.b64encode(json.dumps({"trusted_aks": [ak]}).encode()).decode()
    message.write_text(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
    registered = run_tool("rvps-tool", "register", "--path", str(message), "--addr", server.rvps_addr)
    assert registered.returncode == 0, registered.stderr

    rest, aa, cdh = free_ports(3)
    guest = Proc([script("trustee"), "guest", "--initdata-toml", str(init_data), "--rest-port", str(rest), "--aa-port", str(aa),
                  "--cdh-port", str(cdh), "--data-dir", str(base / "guest")],
                 base / "guest.log", port=rest, env=clean_env(AA_TPM_TCTI=tpm.tcti), timeout=120)
    try:
        submod = token_submod(f"http://127.0.0.1:{rest}", base / "token")
    finally:
        guest.stop()
    assert submod["init_data"] == pcr8
    assert submod["tpm"]["pcr08"] == pcr8
    assert submod["init_data_claims"]["aa.toml"]["token_configs"]["kbs"]["url"] == server.url
    assert f'url = "{server.url}"' in (base / "guest" / "aa.toml").read_text()
