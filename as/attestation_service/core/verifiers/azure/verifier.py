"""`az-snp-vtpm` and `az-tdx-vtpm` (class cpu): the AS verifiers around `verify.py`.

`az-tdx-vtpm` takes the same `CollateralLookup` as `tdx`: with a bundle for
the TD quote's FMSPC the DCAP steps run in full and `tcb_status` reaches the
policy; without one only the quote's own signatures, QE binding and PCK
chain are checked and no `tcb_status` claim is made, so the default policy
cannot grant the hardware claim.
"""

from __future__ import annotations

import datetime

from attestation_service.core.verifier import Claims
from attestation_service.core.verifiers.azure.hcl import parse_azure_evidence
from attestation_service.core.verifiers.azure.verify import evaluate_az_snp_vtpm, evaluate_az_tdx_vtpm
from attestation_service.core.verifiers.tdx import CollateralVerifier, parse_quote
from attestation_service.core.verifiers.tdx.verifier import CollateralLookup, collateral_key
from trustee_common.errors import EvidenceError


class AzSnpVtpmVerifier:
    tee = "az-snp-vtpm"

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        parsed = parse_azure_evidence(evidence, self.tee)
        report = evaluate_az_snp_vtpm(parsed, now=now, report_data=expected_report_data, init_data_hash=expected_init_data_hash)
        report.raise_for_failure()
        assert report.claims is not None
        return [(report.claims, "cpu")]


class AzTdxVtpmVerifier:
    tee = "az-tdx-vtpm"

    def __init__(self, collateral: CollateralLookup | None = None, collateral_verifier: CollateralVerifier | None = None) -> None:
        self._lookup = collateral
        self._verifier = collateral_verifier

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        parsed = parse_azure_evidence(evidence, self.tee)
        bundle = None
        if self._lookup is not None:
            try:
                bundle = self._lookup(*collateral_key(parse_quote(parsed.platform)))
            except EvidenceError:
                bundle = None  # the verification reports the quote's defect at its step
        report = evaluate_az_tdx_vtpm(
            parsed, now=now, report_data=expected_report_data, init_data_hash=expected_init_data_hash,
            collateral=bundle, collateral_verifier=self._verifier,
        )
        report.raise_for_failure()
        assert report.claims is not None
        return [(report.claims, "cpu")]
