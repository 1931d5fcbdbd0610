"""`trustee verify` as a subprocess: every corpus case at its time, exit codes, JSON output."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.procs import script
from tests.tdx.corpus import CASES, GCP, V4, V5, Case


def trustee_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("trustee"), "verify", "--tee", "tdx", *args], capture_output=True, text=True, timeout=60, check=False)


def case_args(case: Case, *, collateral_dir: bool = False) -> list[str]:
    args = ["--evidence", str(case.folder / "quote.bin")]
    if case.collateral_path is not None:
        args += ["--collateral", str(case.folder if collateral_dir else case.collateral_path)]
    if case.time is not None:
        args += ["--at", case.time]
    return args


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_verdicts(case: Case) -> None:
    result = trustee_verify(*case_args(case, collateral_dir=True), "--json")
    output = json.loads(result.stdout)
    if case.rejected_at is None:
        assert result.returncode == 0, result.stderr
        assert output["verdict"] == "verified"
        if case.tcb_status is not None:
            assert output["claims"]["tcb_status"] == case.tcb_status
        else:
            assert "collateral steps skipped" in result.stderr
            assert {s["step"] for s in output["steps"] if s["outcome"] == "skipped"} >= {3, 5, 6, 9, 11, 12, 13}
    else:
        assert result.returncode == 1
        assert output["verdict"] == "rejected"
        assert output["error"].startswith(case.rejected_at)
        assert f"FAIL: {case.rejected_at}" in result.stderr


def test_text_output_lists_steps_and_verdict() -> None:
    result = trustee_verify(*case_args(V4))
    assert result.returncode == 0
    assert "step 10 quote signature" in result.stdout
    assert '"tcb_status": "UpToDate"' in result.stdout
    assert result.stdout.rstrip().endswith("verdict: VERIFIED (tcb_status UpToDate)")


def test_wire_json_with_event_log(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence.json"
    log = (GCP.folder / "ccel_data.bin").read_bytes()
    evidence.write_text(json.dumps({"quote": base64.b64encode(GCP.quote).decode(), "cc_eventlog": base64.b64encode(log).decode()}))
    result = trustee_verify("--evidence", str(evidence), "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["steps"][-1] == {"step": 16, "name": "event log replay", "outcome": "pass", "detail": output["steps"][-1]["detail"]}
    assert output["claims"]["uefi_event_logs"]


def test_report_data_mismatch_is_rejected() -> None:
    result = trustee_verify(*case_args(V4), "--report-data", "00" * 64)
    assert result.returncode == 1
    assert "FAIL: step 14 (report data binding)" in result.stderr


def test_other_fmspc_collateral_is_rejected_at_step_5() -> None:
    result = trustee_verify("--evidence", str(V4.folder / "quote.bin"), "--collateral", str(V5.collateral_path), "--at", V5.time or "")
    assert result.returncode == 1
    assert "FAIL: step 5 (PCK and TCB Info match)" in result.stderr


def test_directory_without_the_fmspc_is_rejected_at_step_3() -> None:
    result = trustee_verify("--evidence", str(V4.folder / "quote.bin"), "--collateral", str(V5.folder), "--at", V4.time or "")
    assert result.returncode == 1
    assert "FAIL: step 3 (collateral integrity): no collateral for this quote" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--evidence", "x", "--at", "yesterday"], ["--evidence", "x", "--report-data", "zz"], ["--at", "2025-01-01T00:00:00Z"]],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert trustee_verify(*args).returncode == 2


def test_unreadable_evidence_exits_1(tmp_path: Path) -> None:
    result = trustee_verify("--evidence", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "cannot read --evidence" in result.stderr
