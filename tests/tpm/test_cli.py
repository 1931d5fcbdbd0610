"""`trustee verify --tee tpm|az-snp-vtpm|az-tdx-vtpm` as a subprocess: corpus verdicts and a rejection."""

from __future__ import annotations

import base64
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


def ak_file(directory: Path) -> Path:
    ak = directory / "ak.der"
    ak.write_bytes(base64.b64decode(tpm_evidence()["ak_public"]))
    return ak


@pytest.mark.parametrize(("tee", "path", "extra"), CASES, ids=[c[0] for c in CASES])
def test_corpus_verified(tee: str, path: Path, extra: list[str], tmp_path: Path) -> None:
    if tee == "tpm":  # a TPM quote verifies only with an anchored AK
        extra = [*extra, "--trusted-ak", str(ak_file(tmp_path))]
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
    result = trustee_verify("tpm", "--evidence", str(evidence), "--trusted-ak", str(ak_file(tmp_path)))
    assert result.returncode == 1
    assert "FAIL: step 3 (quote signature)" in result.stderr


def test_tpm_trusted_ak_file(tmp_path: Path) -> None:
    result = trustee_verify("tpm", "--evidence", str(TPM_EVIDENCE), "--trusted-ak", str(ak_file(tmp_path)), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["claims"]["ak_trust"] == {"method": "reference_value", "source": "verifier_config"}


def test_tpm_without_an_ak_anchor_is_rejected_naming_it() -> None:
    # Before issue 9 this verified ("the policy decides"): a software-forged quote looked fine.
    result = trustee_verify("tpm", "--evidence", str(TPM_EVIDENCE))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "FAIL: step 2 (AK trust): TPM AK not trusted: no trusted AK is configured; no EK/AK CA is configured "
        "(give the AK with --trusted-ak FILE or its EK/AK CA with --ak-ca FILE)"
    )
    assert "step  2 AK trust                   FAIL" in result.stdout


def test_tpm_other_ak_is_rejected(tmp_path: Path) -> None:
    other = tmp_path / "other.der"
    key = base64.b64decode(tpm_evidence()["ak_public"])
    other.write_bytes(key[:-3] + bytes([key[-3] ^ 2]) + key[-2:])
    result = trustee_verify("tpm", "--evidence", str(TPM_EVIDENCE), "--trusted-ak", str(other))
    assert result.returncode == 1
    assert "TPM AK not trusted: ak_public is not a configured trusted AK; no EK/AK CA is configured" in result.stderr
