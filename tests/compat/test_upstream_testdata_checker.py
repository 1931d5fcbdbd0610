"""`scripts/check_upstream_testdata.py` on a fake Trustee checkout built from our corpus (no upstream checkout, no network).

The corpus holds some of upstream's test data files (PROVENANCE.md):
`tdx/trustee-debug-td/quote.bin` is `deps/verifier/test_data/tdx_quote_4.dat`
and `azure/az-{snp,tdx}-vtpm/evidence-v1.json` are upstream's files of the
same name. They are laid out at upstream's paths; the expected-claims JSON
is written from the values `tests/tdx/test_claims_parity.py` carries over.
Every other file the checker reads is left out and must be reported as
skipped.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.rvps.rim_builders import swid_xml
from tests.tdx.corpus import CORPUS
from tests.tdx.test_claims_parity import UPSTREAM_DEBUG_TD

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_upstream_testdata.py"
DATA = "deps/verifier/test_data"
#: Check name -> the upstream file it reads that the fake checkout does not hold.
ABSENT = {
    "tdx/uefi_event_logs": f"{DATA}/CCEL_data",
    "az-snp-vtpm/evidence-v0.json": f"{DATA}/az-snp-vtpm/evidence-v0.json",
    "az-snp-vtpm/evidence-v2.json": f"{DATA}/az-snp-vtpm/evidence-v2.json",
    "az-snp-vtpm/evidence-genoa.json": f"{DATA}/az-snp-vtpm/evidence-genoa.json",
    "az-tdx-vtpm/evidence-v0.json": f"{DATA}/az-tdx-vtpm/evidence-v0.json",
    "rvps/swid": "rvps/src/extractors/swid/test-rim.b64",
    "rvps/corim": "rvps/src/extractors/corim/unsigned-example-corim.cbor",
}
PRESENT = ("tdx/claims", "az-snp-vtpm/evidence-v1.json", "az-tdx-vtpm/evidence-v1.json")


def fake_checkout(root: Path, expected: dict[str, Any]) -> Path:
    data = root / DATA
    for tee in ("az-snp-vtpm", "az-tdx-vtpm"):
        (data / tee).mkdir(parents=True)
        shutil.copyfile(CORPUS / "azure" / tee / "evidence-v1.json", data / tee / "evidence-v1.json")
    shutil.copyfile(CORPUS / "tdx" / "trustee-debug-td" / "quote.bin", data / "tdx_quote_4.dat")
    (data / "parse_tdx_claims_expected.json").write_text(json.dumps(expected, indent=2))
    return root


def run_checker(root: Path) -> tuple[int, dict[str, str], str]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert not done.stderr, done.stderr
    lines = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()}
    return done.returncode, lines, done.stdout


def test_present_files_check_ok_and_missing_ones_are_skipped(tmp_path: Path) -> None:
    # root_key_id: a claim only upstream emits that docs/claims.md lists for tdx (with collateral): allowed, and named.
    expected = {**UPSTREAM_DEBUG_TD, "root_key_id": "00" * 48}
    code, lines, output = run_checker(fake_checkout(tmp_path / "trustee", expected))
    assert set(lines) == {*PRESENT, *ABSENT}, output
    for name in PRESENT:
        assert lines[name].startswith("OK: "), output
    for name, path in ABSENT.items():
        assert lines[name] == f"skipped: {path} not found", output
    assert "documented differences: only upstream: root_key_id" in lines["tdx/claims"], output
    assert "pcr00 e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced" in lines["az-snp-vtpm/evidence-v1.json"]
    assert "pcr00 782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273" in lines["az-tdx-vtpm/evidence-v1.json"]
    assert "report_data 6368616c6c656e6765" in lines["az-tdx-vtpm/evidence-v1.json"]
    assert code == 0, output


def test_differences_are_mismatches_and_bad_input_fails(tmp_path: Path) -> None:
    expected = copy.deepcopy(UPSTREAM_DEBUG_TD)
    expected["quote"]["body"]["mr_td"] = "11" * 48
    expected["td_attributes"]["debug"] = "true"  # the right value with the wrong JSON type
    root = fake_checkout(tmp_path / "trustee", expected)
    data = root / DATA
    # An event log the expected claims have no uefi_event_logs for (GCP's, not upstream's CCEL_data).
    shutil.copyfile(CORPUS / "tdx" / "gcp-ccel" / "ccel_data.bin", data / "CCEL_data")
    (data / "az-snp-vtpm" / "evidence-v0.json").write_text("{}")
    rim = root / "rvps" / "src" / "extractors" / "swid" / "test-rim.b64"
    rim.parent.mkdir(parents=True)
    rim.write_text(base64.b64encode(swid_xml().encode()).decode())  # measurement_12 without upstream's value

    code, lines, output = run_checker(root)
    assert code == 1, output
    claims = lines["tdx/claims"]
    assert claims.startswith("MISMATCH: 2 difference(s): "), output
    assert 'quote.body.mr_td: ours "705ee938' in claims and f'!= upstream "{"11" * 48}"' in claims, output
    assert 'td_attributes.debug: ours true != upstream "true"' in claims, output
    assert lines["tdx/uefi_event_logs"] == "MISMATCH: parse_tdx_claims_expected.json has no uefi_event_logs to compare with", output
    assert lines["az-snp-vtpm/evidence-v0.json"].startswith("FAIL: MalformedRequestError: "), output
    assert lines["rvps/swid"].startswith("MISMATCH: NVIDIA_Corporation.GPU.measurement_12: "), output
    assert "758af96044c7" in lines["rvps/swid"], output
    for name in ("az-snp-vtpm/evidence-v1.json", "az-tdx-vtpm/evidence-v1.json"):
        assert lines[name].startswith("OK: "), output
    assert lines["rvps/corim"].startswith("skipped: "), output


def test_a_checkout_without_any_of_the_files_exits_1(tmp_path: Path) -> None:
    code, lines, output = run_checker(tmp_path)
    assert code == 1 and lines and all(line.startswith("skipped: ") for line in lines.values()), output
