"""Azure vTPM evidence in every layout upstream accepts (version 0 without `version`, 1, 2), Milan and Genoa.

The corpus holds one real capture per TEE, in the version 1 layout. Version
0 and version 2 samples are derived from it here by re-encoding the same
bytes (`az_as_v0`, `az_relabelled`): the signed parts are the capture's
own, so the verdicts must equal version 1's, and every format proves the
same things (the mutations below are rejected at the same step whatever
the layout). Version 2 adds one check (the HCL `user-data` begins with the
report data); the capture's `user-data` is zero, so its version 2 form is
rejected there; a passing version 2 sample cannot be derived (the
`user-data` is inside the signed HCL report).
"""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest
from attestation_service.core.verifiers.azure import (
    AzSnpVtpmVerifier,
    AzTdxVtpmVerifier,
    evaluate_az_snp_vtpm,
    evaluate_az_tdx_vtpm,
    parse_azure_evidence,
)
from attestation_service.core.verifiers.azure.snp_seam import SnpCheckError, check_vcek_chain
from attestation_service.core.verifiers.snp import parse_evidence, parse_report
from attestation_service.core.verifiers.snp.certs import load_certificate
from cryptography.hazmat.primitives.serialization import Encoding

from tests.tpm.corpus import (
    AZ_REPORT_DATA,
    AZ_SNP_EVIDENCE,
    AZ_TDX_EVIDENCE,
    AZ_TIME,
    CORPUS,
    az_as_v0,
    az_relabelled,
    load,
)
from trustee_common.errors import MalformedRequestError

AZ_NOW = datetime.datetime.fromisoformat(AZ_TIME.replace("Z", "+00:00"))
EVALUATE = {"az-snp-vtpm": evaluate_az_snp_vtpm, "az-tdx-vtpm": evaluate_az_tdx_vtpm}
CAPTURE = {"az-snp-vtpm": AZ_SNP_EVIDENCE, "az-tdx-vtpm": AZ_TDX_EVIDENCE}
#: Step number of "vTPM quote signature" per TEE.
FIRST_VTPM = {"az-snp-vtpm": 6, "az-tdx-vtpm": 5}
TEES = sorted(CAPTURE)


def forms(tee: str) -> dict[str, dict[str, Any]]:
    v1 = load(CAPTURE[tee])
    return {
        "v0": az_as_v0(v1, tee),
        "v1-string": v1,  # the capture says "1"
        "v1-number": az_relabelled(v1, 1),  # what guest-components sends
    }


def run(tee: str, evidence: dict[str, Any], report_data: bytes = AZ_REPORT_DATA) -> Any:
    return EVALUATE[tee](parse_azure_evidence(evidence, tee), now=AZ_NOW, report_data=report_data)


def failed(report: Any) -> tuple[int, str]:
    step = next(s for s in report.steps if s.outcome == "fail")
    return step.number, step.name


@pytest.mark.parametrize("tee", TEES)
def test_every_version_verifies_with_the_same_claims(tee: str) -> None:
    results = {name: run(tee, evidence) for name, evidence in forms(tee).items()}
    for name, report in results.items():
        assert report, (name, report.error)
    claims = [r.claims for r in results.values()]
    assert all(c == claims[0] for c in claims)
    assert parse_azure_evidence(forms(tee)["v0"], tee).version == 0


@pytest.mark.parametrize("tee", TEES)
def test_every_version_through_the_as_verifier(tee: str) -> None:
    verifier: Any = AzSnpVtpmVerifier() if tee == "az-snp-vtpm" else AzTdxVtpmVerifier()
    outputs = [verifier.evaluate(evidence, AZ_REPORT_DATA, None, AZ_NOW) for evidence in forms(tee).values()]
    assert all(out == outputs[0] for out in outputs)
    assert outputs[0][0][1] == "cpu"


@pytest.mark.parametrize("tee", TEES)
def test_version_2_requires_the_report_data_in_user_data(tee: str) -> None:
    v2 = az_relabelled(load(CAPTURE[tee]), 2)
    report = run(tee, v2)
    assert failed(report) == (FIRST_VTPM[tee] + 2, "report data binding")
    assert "user-data" in str(report.error)
    assert run(tee, az_relabelled(load(CAPTURE[tee]), "2")).error is not None  # the string form too
    assert run(tee, load(CAPTURE[tee]))  # the same bytes as version 1: no user-data rule


def _flip_v0(evidence: dict[str, Any], path: tuple[str, ...], index: int) -> dict[str, Any]:
    out = copy.deepcopy(evidence)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]][index] ^= 0x01
    return out


@pytest.mark.parametrize("tee", TEES)
def test_version_0_proves_the_same_things(tee: str) -> None:
    v0 = forms(tee)["v0"]
    quote = "quote" if tee == "az-snp-vtpm" else "tpm_quote"
    first = FIRST_VTPM[tee]
    assert failed(run(tee, _flip_v0(v0, (quote, "signature"), 10))) == (first, "vTPM quote signature")
    assert failed(run(tee, _flip_v0(v0, (quote, "message"), 60)))[0] == first
    wrong_pcr = copy.deepcopy(v0)
    wrong_pcr[quote]["pcrs"][11] = [0x11] * 32
    assert failed(run(tee, wrong_pcr)) == (first + 1, "PCR digest")
    assert failed(run(tee, v0, report_data=b"other")) == (first + 2, "report data binding")
    report_field = "report" if tee == "az-snp-vtpm" else "hcl_report"
    hcl = bytes(v0[report_field])
    runtime = hcl.index(b'"vm-configuration"')
    tampered = _flip_v0(v0, (report_field,), runtime + 1 + 1)
    assert failed(run(tee, tampered)) == (first - 1, "runtime data binding")
    if tee == "az-snp-vtpm":
        measurement = _flip_v0(v0, ("report",), 0x20 + 0x90)
        assert failed(run(tee, measurement)) == (4, "SNP report signature")
    else:
        td_quote = _flip_v0(v0, ("td_quote",), 48 + 520)  # TD quote report_data
        assert failed(run(tee, td_quote)) == (2, "TD quote")


@pytest.mark.parametrize(
    ("tee", "evidence", "names"),
    [
        ("az-snp-vtpm", {"version": 3}, "version 3"),
        ("az-snp-vtpm", {"version": True}, "version True"),
        ("az-snp-vtpm", {"quote": {}, "report": [], "vcek": ""}, "pcrs"),
        ("az-tdx-vtpm", {"tpm_quote": {"pcrs": [[0] * 32] * 24, "message": [256], "signature": []}}, "message"),
        ("az-snp-vtpm", {"quote": {"pcrs": [[0] * 32] * 24, "message": [], "signature": []}, "report": [1],
                         "vcek": "MIIB"}, "'vcek'"),
        ("az-tdx-vtpm", {"tpm_quote": {"pcrs": [[0] * 31] * 24, "message": [], "signature": []}}, "pcrs[0]"),
    ],
)
def test_malformed_layouts_name_the_field(tee: str, evidence: dict[str, Any], names: str) -> None:
    with pytest.raises(MalformedRequestError) as caught:
        parse_azure_evidence(evidence, tee)
    assert names in caught.value.detail


# --- Milan and Genoa: the product's ASK/ARK, the product from the report's CPUID -------------


def _genoa() -> tuple[Any, bytes]:
    evidence = json.loads((CORPUS / "snp" / "trustee-genoa-e2e" / "evidence.json").read_text())
    parsed = parse_evidence(evidence)
    vcek = parsed.certificates[0].public_bytes(Encoding.DER)
    return parse_report(parsed.report), vcek


def _azure_milan() -> tuple[Any, bytes]:
    from attestation_service.core.verifiers.azure import parse_hcl_report

    evidence = parse_azure_evidence(load(AZ_SNP_EVIDENCE), "az-snp-vtpm")
    return parse_report(parse_hcl_report(evidence.hcl_report).hw_report), evidence.platform


def test_milan_capture_uses_the_milan_chain() -> None:
    report, vcek = _azure_milan()
    assert report.product == "Milan"
    assert check_vcek_chain(vcek, report, AZ_NOW)[1] == "Milan"


def test_genoa_report_uses_the_genoa_chain() -> None:
    # The corpus's real Genoa report and VCEK (no Azure capture from Genoa is in the corpus): the
    # chain the Azure verifier picks for a Genoa CPU is Genoa's.
    report, vcek = _genoa()
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert report.product == "Genoa"
    cert, product = check_vcek_chain(vcek, report, now)
    assert product == "Genoa" and cert == load_certificate(vcek, "vcek")


def test_a_vcek_of_another_product_is_refused() -> None:
    milan_report, milan_vcek = _azure_milan()
    genoa_report, genoa_vcek = _genoa()
    with pytest.raises(SnpCheckError, match="from a Milan CPU but the VCEK is for Genoa"):
        check_vcek_chain(genoa_vcek, milan_report, AZ_NOW)
    with pytest.raises(SnpCheckError, match="from a Genoa CPU but the VCEK is for Milan"):
        check_vcek_chain(milan_vcek, genoa_report, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))


def test_a_vcek_of_another_chip_is_refused() -> None:
    # Same product (Milan), another chip: the virtee Milan VCEK against the Azure Milan report.
    report, _ = _azure_milan()
    other = (CORPUS / "snp" / "virtee-milan" / "vcek.der").read_bytes()
    with pytest.raises(SnpCheckError):
        check_vcek_chain(other, report, AZ_NOW)
