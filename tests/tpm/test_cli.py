"""`trustee verify --tee tpm|az-snp-vtpm|az-tdx-vtpm` as a subprocess: corpus verdicts and a rejection."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.procs import script
from tests.tpm.corpus import AZ_REPORT_DATA, AZ_SNP_EVIDENCE, AZ_TDX_EVIDENCE, AZ_TIME, TPM_EVIDENCE, mutated, tpm_evidence


def trustee_verify(tee: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("trustee"), "verify", "--tee", tee, *args], capture_output=True, text=True, timeout=60, check=False)


CASES = [
    ("tpm", TPM_EVIDENCE, []),
    ("az-snp-vtpm", AZ_SNP_EVIDENCE, ["--report-data", AZ_REPORT_DATA.hex(), "--at", AZ_TIME]),
    ("az-tdx-vtpm", AZ_TDX_EVIDENCE, ["--report-data", AZ_REPORT_DATA.hex(), "--at", AZ_TIME]),
]


@pytest.mark.parametrize(("tee", "path", "extra"), CASES, ids=[c[0] for c in CASES])
def test_corpus_verified(tee: str, path: Path, extra: list[str]) -> None:
    result = trustee_verify(tee, "--evidence", str(path), *extra, "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["verdict"] == "verified"
    pcrs = output["claims"] if tee == "tpm" else output["claims"]["tpm"]
    assert len(pcrs["pcr23"]) == 64
    text = trustee_verify(tee, "--evidence", str(path), *extra)
    assert "verdict: VERIFIED" in text.stdout


def test_tpm_bad_signature_rejected(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(mutated(tpm_evidence(), "signature", 40)))
    result = trustee_verify("tpm", "--evidence", str(evidence))
    assert result.returncode == 1
    assert "FAIL: step 3 (quote signature)" in result.stderr


def test_tpm_trusted_ak_file(tmp_path: Path) -> None:
    import base64

    ak = tmp_path / "ak.der"
    ak.write_bytes(base64.b64decode(tpm_evidence()["ak_public"]))
    result = trustee_verify("tpm", "--evidence", str(TPM_EVIDENCE), "--trusted-ak", str(ak), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["claims"]["ak_trust"] == {"method": "reference_value"}
