"""`tpm` claims equal upstream's, claim by claim (docs/claims.md lists the deliberate differences).

Upstream's TPM claims are a fixed function of the evidence: `pcr00`..`pcr23`
(the quoted SHA-256 PCRs, hex), `init_data` (PCR 8, hex), `report_data` (the
quote's extraData, hex) and `ak_public` (the string received). The values
below are read from the corpus evidence JSON and its TPMS_ATTEST bytes.
"""

from __future__ import annotations

from typing import Any

from tests.claims_parity import assert_parity
from tests.tpm.corpus import TPM_EXTRA_DATA, tpm_evidence
from tests.tpm.test_verify import NOW, evaluate_registered


def upstream_claims(evidence: dict[str, Any]) -> dict[str, Any]:
    pcrs = evidence["tpm_quote"]["pcrs"]
    return {
        **{f"pcr{i:02d}": pcr for i, pcr in enumerate(pcrs)},
        "init_data": pcrs[8],
        "report_data": TPM_EXTRA_DATA.hex(),
        "ak_public": evidence["ak_public"],
    }


def test_claims_equal_upstreams() -> None:
    evidence = tpm_evidence()
    report = evaluate_registered(evidence, now=NOW)
    assert report.claims is not None, report.error
    assert_parity("tpm", report.claims, upstream_claims(evidence))
