"""Azure confidential VMs with a vTPM (`az-snp-vtpm`, `az-tdx-vtpm`), pure.

Modules: `hcl` (HCL report and wire evidence), `snp_seam` (the SNP report
checks, on top of the `snp` package's parser and AMD chains), `verify`
(numbered steps, report and raising forms, claims), `verifier` (AS verifiers).
"""

from attestation_service.core.verifiers.azure.hcl import (
    AzureEvidence,
    HclReport,
    HclReportError,
    parse_azure_evidence,
    parse_hcl_report,
)
from attestation_service.core.verifiers.azure.verifier import AzSnpVtpmVerifier, AzTdxVtpmVerifier
from attestation_service.core.verifiers.azure.verify import (
    AzureVerificationError,
    AzureVerificationReport,
    evaluate_az_snp_vtpm,
    evaluate_az_tdx_vtpm,
)

__all__ = [
    "AzSnpVtpmVerifier",
    "AzTdxVtpmVerifier",
    "AzureEvidence",
    "AzureVerificationError",
    "AzureVerificationReport",
    "HclReport",
    "HclReportError",
    "evaluate_az_snp_vtpm",
    "evaluate_az_tdx_vtpm",
    "parse_azure_evidence",
    "parse_hcl_report",
]
