"""`trustee verify --tee snp` as a subprocess: every corpus case at its time, collateral forms, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from attestation_service.core.verifiers.snp import VcekKey, parse_report

from tests.procs import script
from tests.snp.corpus import CASES, GENOA, MILAN, SNP, VLEK, Case, wire_json


def trustee_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("trustee"), "verify", "--tee", "snp", *args], capture_output=True, text=True, timeout=60, check=False)


def case_args(case: Case) -> list[str]:
    if (case.path / "evidence.json").exists():
        args = ["--evidence", str(case.path / "evidence.json")]
    else:
        args = ["--evidence", str(case.path / "report.bin")]
    if len(case.collateral) > 1:
        args += ["--collateral", str(case.path)]  # the folder: VCEK and chain files
    elif case.collateral:
        args += ["--collateral", str((case.path / case.collateral[0]).resolve())]
    return [*args, "--at", case.time]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_verdicts(case: Case) -> None:
    result = trustee_verify(*case_args(case), "--json")
    output = json.loads(result.stdout)
    if case.rejected_at is None:
        assert result.returncode == 0, result.stderr
        assert output["verdict"] == "verified"
        assert output["claims"]["vmpl"] == case.vmpl
        assert "OK: verified" in result.stderr
    else:
        assert result.returncode == 1
        assert output["verdict"] == "rejected"
        assert output["error"].startswith(case.rejected_at)
        assert f"FAIL: {case.rejected_at}" in result.stderr


def test_text_output_lists_steps() -> None:
    result = trustee_verify(*case_args(GENOA))
    assert result.returncode == 0
    assert "step  7 report signature" in result.stdout
    assert '"product": "Genoa"' in result.stdout
    assert result.stdout.rstrip().endswith("verdict: VERIFIED")


def test_kds_layout_offline_store(tmp_path: Path) -> None:
    key = VcekKey.of(parse_report(MILAN.report))
    stored = tmp_path / "store" / key.kds_path("Milan")
    stored.parent.mkdir(parents=True)
    shutil.copy(SNP / "virtee-milan" / "vcek.der", stored)
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(wire_json(MILAN.report)))
    result = trustee_verify("--evidence", str(evidence), "--collateral", str(tmp_path / "store"), "--at", MILAN.time)
    assert result.returncode == 0, result.stderr
    assert trustee_verify("--evidence", str(evidence), "--at", MILAN.time).returncode == 1


def test_wire_json_vlek_with_expected_report_data() -> None:
    report_data = parse_report(VLEK.report).report_data.hex()
    ok = trustee_verify(*case_args(VLEK), "--report-data", report_data)
    assert ok.returncode == 0, ok.stderr
    bad = trustee_verify(*case_args(VLEK), "--report-data", "00" * 64)
    assert bad.returncode == 1
    assert "FAIL: step 8 (report data binding)" in bad.stderr


def test_wrong_chain_is_rejected_at_step_5() -> None:
    result = trustee_verify("--evidence", str(MILAN.path / "report.bin"), "--collateral", str(SNP / "amd" / "genoa_ask_ark_asvk.pem"),
                            "--at", MILAN.time)
    assert result.returncode == 1
    assert "FAIL: step 3 (endorsement key)" in result.stderr  # no VCEK at all in a bare chain
    with_vcek = trustee_verify("--evidence", str(GENOA.path / "evidence.json"), "--collateral", str(SNP / "amd" / "milan_ask_ark_asvk.pem"),
                               "--at", GENOA.time)
    assert with_vcek.returncode == 1
    assert "FAIL: step 5 (AMD certificate chain): ARK-Milan" in with_vcek.stderr


def test_bad_collateral_and_evidence_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("nothing")
    assert trustee_verify("--evidence", str(MILAN.path / "report.bin"), "--collateral", str(junk)).returncode == 1
    assert trustee_verify("--evidence", str(tmp_path / "missing")).returncode == 1
    short = tmp_path / "short.bin"
    short.write_bytes(MILAN.report[:100])
    result = trustee_verify("--evidence", str(short))
    assert result.returncode == 1
    assert "FAIL: step 1 (report layout): report: 100 bytes" in result.stderr
