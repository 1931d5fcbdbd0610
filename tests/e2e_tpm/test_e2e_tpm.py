"""TPM end to end: swtpm + `trustee run` + `trustee guest` with the tpm attester, all real processes.

First, with `trustee run`'s defaults (no AK configured, the built-in resource
policy): the swtpm's AK is trusted by nothing, so its quote (as good as one
forged in software) gets no token and no resource; once the operator
registers the AK as the reference value `trusted_aks`, the same guest
attests (EAR `warning`: PCR 11 unregistered) and the default policy releases.

Then the operator registers the AK and PCR 11 as reference values (`rvps-tool`,
names the default policy reads: `trusted_aks`, `tpm_pcr11`), requires an
affirming EAR (`kbs-client set-resource-policy --affirming`), and the secret
comes back through the guest REST API with curl. Then PCR 11 is extended
(tpm2-pytss PCR_Extend): a fresh guest's attestation is contraindicated
(executables 96: the default policy's rule for a PCR 11 outside the
registered values; upstream's would leave 33, a warning) and the resource is
refused with 403.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_tpm.swtpm import Swtpm
from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool

pytest.importorskip("tpm2_pytss")
pytestmark = pytest.mark.e2e

from guest.attesters.tpm import TpmAttester, TpmSettings  # noqa: E402 - after the importorskip

SECRET = b"tpm e2e secret \x00\xff"
RESOURCE = "default/tpm/secret"


@dataclass
class Stack:
    tpm: Swtpm
    server: TrusteeRun
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e-tpm")
    tpm = Swtpm(base / "swtpm-state", base / "swtpm.log")
    try:
        server = TrusteeRun(base / "trustee-data", base / "trustee.log")
    except BaseException:
        tpm.stop()
        raise
    yield Stack(tpm, server, base)
    server.stop()
    assert tpm.stop() in (0, -15)


def start_guest(stack: Stack, name: str) -> tuple[Proc, str]:
    rest, aa, cdh = free_ports(3)
    env = clean_env(AA_TPM_TCTI=stack.tpm.tcti)
    guest = Proc([script("trustee"), "guest", "--kbs-url", stack.server.url, "--rest-port", str(rest), "--aa-port", str(aa),
                  "--cdh-port", str(cdh), "--data-dir", str(stack.workdir / name)],
                 stack.workdir / f"{name}.log", port=rest, env=env, timeout=120)
    return guest, f"http://127.0.0.1:{rest}"


def admin(stack: Stack, *args: str) -> None:
    result = run_tool("kbs-client", "--url", stack.server.url, "config", "--admin-token-file", str(stack.server.admin_token), *args)
    assert result.returncode == 0, result.stderr


def register(stack: Stack, values: dict[str, list[str]]) -> None:
    message = stack.workdir / "rv.json"
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    message.write_text(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
    result = run_tool("rvps-tool", "register", "--path", str(message), "--addr", stack.server.rvps_addr)
    assert result.returncode == 0, result.stderr


def curl(url: str, out: Path) -> int:
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip("curl is not installed")
    result = subprocess.run([binary, "-sS", "-o", str(out), "-w", "%{http_code}", url], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def ear_status(rest_url: str, out: Path) -> dict[str, Any]:
    assert curl(f"{rest_url}/aa/token?token_type=kbs", out) == 200, out.read_bytes()
    token = json.loads(out.read_bytes())["token"] if out.read_bytes().startswith(b"{") else out.read_text()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    submod: dict[str, Any] = claims["submods"]["cpu0"]
    return submod


def test_untrusted_ak_gets_nothing_under_the_defaults_until_registered(stack: Stack, tmp_path: Path) -> None:
    # Before issue 9 the first fetch returned the secret: AK trust was left to the policy and the default
    # resource policy ignored the "warning" status.
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    admin(stack, "set-resource", "--path", RESOURCE, "--resource-file", str(secret))
    guest, rest_url = start_guest(stack, "untrusted")
    try:
        out = tmp_path / "refused"
        status = curl(f"{rest_url}/cdh/resource/{RESOURCE}", out)
        assert status != 200 and SECRET not in out.read_bytes(), (status, out.read_bytes())
        assert curl(f"{rest_url}/aa/token?token_type=kbs", tmp_path / "no-token") != 200
        logs = stack.server.data_dir / "logs"
        kbs_log = (logs / "kbs.log").read_text(errors="replace")
        # The AS's refusal, as the KBS logs it and answers the guest: the missing anchors by name.
        assert "TPM AK not trusted: no trusted_aks reference value is registered" in kbs_log, kbs_log[-3000:]
    finally:
        guest.stop()

    evidence = TpmAttester(TpmSettings(stack.tpm.tcti)).get_evidence(b"\x00" * 32)
    register(stack, {"trusted_aks": [evidence["ak_public"]]})
    guest, rest_url = start_guest(stack, "registered")
    try:
        out = tmp_path / "released"
        assert curl(f"{rest_url}/cdh/resource/{RESOURCE}", out) == 200, (out.read_bytes(), guest.output()[-2000:])
        assert out.read_bytes() == SECRET
        submod = ear_status(rest_url, tmp_path / "token")
        assert submod["ear.status"] == "warning"
        assert submod["ear.veraison.annotated-evidence"]["tpm"]["ak_trust"] == {"method": "reference_value", "source": "rvps"}
    finally:
        guest.stop()


def test_swtpm_attestation_and_pcr_change(stack: Stack, tmp_path: Path) -> None:
    attester = TpmAttester(TpmSettings(stack.tpm.tcti))
    evidence = attester.get_evidence(b"\x00" * 32)
    register(stack, {"trusted_aks": [evidence["ak_public"]], "tpm_pcr11": [evidence["tpm_quote"]["pcrs"][11]]})
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    admin(stack, "set-resource-policy", "--affirming")
    admin(stack, "set-resource", "--path", RESOURCE, "--resource-file", str(secret))

    guest, rest_url = start_guest(stack, "guest1")
    try:
        out = tmp_path / "fetched"
        assert curl(f"{rest_url}/cdh/resource/{RESOURCE}", out) == 200, (out.read_bytes(), guest.output()[-2000:])
        assert out.read_bytes() == SECRET
        aa_log = (stack.workdir / "guest1" / "logs" / "attestation-agent.log").read_text()
        assert "using the tpm attester" in aa_log
        submod = ear_status(rest_url, tmp_path / "token1")
        assert submod["ear.status"] == "affirming"
        annotated = submod["ear.veraison.annotated-evidence"]["tpm"]
        assert annotated["ak_public"] == evidence["ak_public"]
        assert annotated["ak_trust"] == {"method": "reference_value", "source": "rvps"}
    finally:
        guest.stop()

    attester.extend_pcr(11, hashlib.sha256(b"something else ran").digest())
    guest, rest_url = start_guest(stack, "guest2")
    try:
        out = tmp_path / "denied"
        assert curl(f"{rest_url}/cdh/resource/{RESOURCE}", out) == 403, (out.read_bytes(), guest.output()[-2000:])
        assert SECRET not in out.read_bytes()
        submod = ear_status(rest_url, tmp_path / "token2")
        assert submod["ear.status"] == "contraindicated"
        assert submod["ear.trustworthiness-vector"]["executables"] == 96
    finally:
        guest.stop()
