"""`trustee initdata digest` prints exactly what our verifiers accept.

Each printed value is fed, with the same init-data file, through the
verifier's own init-data check (TDX step 15 `check_binding` on MRCONFIGID,
SNP step 9 on HOST_DATA, the vTPM `check_init_data` on PCR 8): it passes,
and the same value with one byte changed fails. The expected digest comes
from the AS's request path (`parse_init_data_toml`, what the AS recomputes
from the TOML the guest sends). The corpus has no evidence whose MRCONFIGID
or HOST_DATA binds a known init-data TOML (the TDX quotes carry all zeros,
the SNP reports host data without its preimage), so no corpus quote is
matched here; tests/e2e_tpm/test_initdata_tpm.py goes end to end with a real
(software) TPM instead.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from attestation_service.core.initdata import parse_init_data_toml
from attestation_service.core.verifiers.snp import verify as snp_verify
from attestation_service.core.verifiers.tdx import steps as tdx_steps
from attestation_service.core.verifiers.tpm.quote import TpmQuoteError, check_init_data

from tests.procs import script
from trustee_common.errors import EvidenceError

VTPM_TEES = ("tpm", "az-snp-vtpm", "az-tdx-vtpm")


def init_data(algorithm: str) -> str:
    return (f'version = "0.1.0"\nalgorithm = "{algorithm}"\n\n[data]\n"aa.toml" = \'\'\'\n[token_configs.kbs]\n'
            'url = "https://kbs.example:8080"\n\'\'\'\n"cdh.toml" = \'\'\'\n[kbc]\nname = "cc_kbc"\n'
            'url = "https://kbs.example:8080"\n\'\'\'\n')


def digest_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("trustee"), "initdata", "digest", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def printed(path: Path, tee: str, *extra: str) -> bytes:
    result = digest_cli("--tee", tee, str(path), *extra)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line
    return bytes.fromhex(line)


def flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


@pytest.fixture
def toml_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "initdata.toml"
    path.write_text(init_data(request.param))
    return path


@pytest.mark.parametrize("toml_file", ["sha256", "sha384", "sha512"], indirect=True)
def test_tdx_mrconfigid_passes_step_15(toml_file: Path) -> None:
    expected = parse_init_data_toml(toml_file.read_text()).digest
    value = printed(toml_file, "tdx")
    assert len(value) == 48
    assert tdx_steps.check_binding(value, expected, tdx_steps.INIT_DATA_SIZE) == "mr_config_id matches"
    with pytest.raises(EvidenceError, match="mr_config_id"):
        tdx_steps.check_binding(flipped(value), expected, tdx_steps.INIT_DATA_SIZE)


@pytest.mark.parametrize("toml_file", ["sha256", "sha384", "sha512"], indirect=True)
def test_snp_host_data_passes_step_9(toml_file: Path) -> None:
    expected = parse_init_data_toml(toml_file.read_text()).digest
    value = printed(toml_file, "snp")
    assert len(value) == 32
    assert snp_verify.check_binding(value, expected, snp_verify.INIT_DATA_SIZE, "host_data") == "host_data matches"
    with pytest.raises(EvidenceError, match="host_data"):
        snp_verify.check_binding(flipped(value), expected, snp_verify.INIT_DATA_SIZE, "host_data")


@pytest.mark.parametrize("tee", VTPM_TEES)
@pytest.mark.parametrize("toml_file", ["sha256"], indirect=True)
def test_vtpm_pcr8_passes_the_init_data_check(toml_file: Path, tee: str) -> None:
    expected = parse_init_data_toml(toml_file.read_text()).digest
    value = printed(toml_file, tee)
    pcrs = [bytes(32)] * 24
    pcrs[8] = value
    assert check_init_data(pcrs, expected).startswith("PCR 8 ==")
    pcrs[8] = flipped(value)
    with pytest.raises(TpmQuoteError, match="PCR 8"):
        check_init_data(pcrs, expected)


@pytest.mark.parametrize("toml_file", ["sha384"], indirect=True)
def test_base64_is_the_same_bytes(toml_file: Path) -> None:
    for tee in ("tdx", "snp"):
        result = digest_cli("--tee", tee, "--encoding", "base64", str(toml_file))
        assert result.returncode == 0, result.stderr
        assert base64.b64decode(result.stdout.strip(), validate=True) == printed(toml_file, tee)


@pytest.mark.parametrize("toml_file", ["sha384"], indirect=True)
def test_algorithm_override_is_the_digest_format_value_with_a_warning(toml_file: Path) -> None:
    """--algorithm sha256 on a sha384 TOML: what a guest sending the sha256 digest itself binds."""
    import hashlib

    result = digest_cli("--tee", "tdx", "--algorithm", "sha256", str(toml_file))
    assert result.returncode == 0, result.stderr
    value = bytes.fromhex(result.stdout.strip())
    assert tdx_steps.check_binding(value, hashlib.sha256(toml_file.read_bytes()).digest(), 48) == "mr_config_id matches"
    assert "warning:" in result.stderr and "sha384" in result.stderr
    same = digest_cli("--tee", "tdx", "--algorithm", "sha384", str(toml_file))
    assert same.stderr == "" and bytes.fromhex(same.stdout.strip()) == printed(toml_file, "tdx")


@pytest.mark.parametrize(
    ("content", "args", "code", "message"),
    [
        (None, ["--tee", "tdx"], 1, "cannot read init-data"),
        ("version = ", ["--tee", "tdx"], 1, "not a UTF-8 TOML document"),
        (b"\xff\xfe", ["--tee", "snp"], 1, "not a UTF-8 TOML document"),
        ('version = "0.2.0"\nalgorithm = "sha384"\n[data]\n', ["--tee", "tdx"], 1, "unsupported init-data version"),
        ('version = "0.1.0"\nalgorithm = "md5"\n[data]\n', ["--tee", "tdx"], 1, "unsupported algorithm 'md5'"),
        ('version = "0.1.0"\nalgorithm = "SHA384"\n[data]\n', ["--tee", "tdx"], 1, "the attestation service would refuse it"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\nx = 1\n', ["--tee", "tdx"], 1, "must be a string"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n', ["--tee", "tpm"], 1, "must be sha256, not sha384"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n', ["--tee", "az-tdx-vtpm"], 1, "must be sha256"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n', ["--tee", "tdx", "--algorithm", "md5"], 2, "invalid choice: 'md5'"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n', ["--tee", "sgx"], 2, "invalid choice: 'sgx'"),
        ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n', [], 2, "--tee"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, content: str | bytes | None, args: list[str], code: int, message: str) -> None:
    path = tmp_path / "initdata.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = digest_cli(*args, str(path))
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("aa_toml", "args", "code", "message"),
    [
        ('[token_configs.kbs]\nurl = "https://kbs.example:8080"\n', ["--kbs-url", "https://other.example:8080"], 1,
         "names the KBS https://kbs.example:8080, not --kbs-url https://other.example:8080"),
        ('[token_configs.kbs]\nurl = "kbs.example"\n', [], 1, "is not an http:// or https:// URL"),
        ('[token_configs.kbs]\nurl = 7\n', [], 1, "url and cert must be strings"),
        ("", [], 2, "give --kbs-url, or an --initdata-toml"),
    ],
)
def test_trustee_guest_refuses_init_data_naming_another_kbs(tmp_path: Path, aa_toml: str, args: list[str], code: int,
                                                           message: str) -> None:
    path = tmp_path / "initdata.toml"
    path.write_text(f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = \'\'\'\n{aa_toml}\'\'\'\n')
    result = subprocess.run([script("trustee"), "guest", "--initdata-toml", str(path), "--data-dir", str(tmp_path / "g"), *args],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "g").exists()
