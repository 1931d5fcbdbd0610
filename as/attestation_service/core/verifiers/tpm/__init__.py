"""TPM 2.0 quote verification (`tpm`), pure: structures, quote checks, numbered steps, AS verifier.

Modules: `structures` (TPMS_ATTEST / TPMT_SIGNATURE parser), `quote`
(signature, PCR digest, nonce, PCR 8 checks shared with the Azure vTPM
verifiers), `verify` (steps, AK trust, report and raising forms, claims),
`verifier` (evidence JSON and the AS `Verifier`).
"""

from attestation_service.core.verifiers.steps import StepResult
from attestation_service.core.verifiers.tpm.quote import TpmQuoteError, load_ak, verify_signature
from attestation_service.core.verifiers.tpm.structures import (
    TpmParseError,
    TpmsAttest,
    TpmtSignature,
    parse_attest,
    parse_signature,
)
from attestation_service.core.verifiers.tpm.verifier import TpmVerifier, parse_evidence, replay_tpm_event_log
from attestation_service.core.verifiers.tpm.verify import (
    AkTrust,
    TpmEvidence,
    TpmVerificationReport,
    evaluate_tpm_quote,
    verify_tpm_quote,
)

__all__ = [
    "AkTrust",
    "StepResult",
    "TpmEvidence",
    "TpmParseError",
    "TpmQuoteError",
    "TpmVerificationReport",
    "TpmVerifier",
    "TpmsAttest",
    "TpmtSignature",
    "evaluate_tpm_quote",
    "load_ak",
    "parse_attest",
    "parse_evidence",
    "parse_signature",
    "replay_tpm_event_log",
    "verify_signature",
    "verify_tpm_quote",
]
