"""AMD SEV-SNP report verification (evidence.md 3), pure: parsing, AMD chain, extensions, signature, claims.

Modules: `report` (1184-byte report parser and upstream's wire object),
`certs` (pinned ARKs shipped in `amd/`, RSA-PSS checks, VCEK/VLEK
extensions), `verify` (the numbered steps, raising and report forms),
`claims` (upstream claim names plus `vmpl`), `verifier` (the AS `Verifier`).
"""

from attestation_service.core.verifiers.snp.certs import PINNED_ARK_SHA256, amd_roots, load_certificate, load_certificates
from attestation_service.core.verifiers.snp.report import (
    SnpReport,
    SnpReportParseError,
    parse_report,
    report_from_json,
    report_to_json,
)
from attestation_service.core.verifiers.snp.verifier import SnpVerifier, VcekKey, VcekLookup, parse_evidence
from attestation_service.core.verifiers.snp.verify import (
    SnpVerificationError,
    SnpVerificationInput,
    SnpVerificationReport,
    StepResult,
    evaluate_snp_report,
    report_signature_valid,
    verify_snp_report,
)

__all__ = [
    "PINNED_ARK_SHA256",
    "SnpReport",
    "SnpReportParseError",
    "SnpVerificationError",
    "SnpVerificationInput",
    "SnpVerificationReport",
    "SnpVerifier",
    "StepResult",
    "VcekKey",
    "VcekLookup",
    "amd_roots",
    "evaluate_snp_report",
    "load_certificate",
    "load_certificates",
    "parse_evidence",
    "parse_report",
    "report_from_json",
    "report_signature_valid",
    "report_to_json",
    "verify_snp_report",
]
