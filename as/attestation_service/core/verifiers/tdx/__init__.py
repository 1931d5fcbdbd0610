"""Intel TDX DCAP verification (quote v4/v5), pure: parsing, collateral checks, TCB evaluation, claims.

Modules: `quote` (parser), `pck` (PCK SGX extension), `tcb` (TCB Info /
QE identity and status rules), `collateral` (bundle, step-3 checks, pinned
root, cache), `verify` (the numbered steps, raising and report forms),
`claims` (upstream claim names), `verifier` (the AS `Verifier`).
"""

from attestation_service.core.verifiers.tdx.collateral import CollateralVerifier, TdxCollateral, load_root_ca
from attestation_service.core.verifiers.tdx.quote import QuoteParseError, TdxQuote, parse_quote
from attestation_service.core.verifiers.tdx.verifier import TdxVerifier, parse_evidence, replay_event_log
from attestation_service.core.verifiers.tdx.verify import (
    StepResult,
    TdxVerificationError,
    TdxVerificationInput,
    TdxVerificationReport,
    evaluate_tdx_quote,
    verify_tdx_quote,
)

__all__ = [
    "CollateralVerifier",
    "QuoteParseError",
    "StepResult",
    "TdxCollateral",
    "TdxQuote",
    "TdxVerificationError",
    "TdxVerificationInput",
    "TdxVerificationReport",
    "TdxVerifier",
    "evaluate_tdx_quote",
    "load_root_ca",
    "parse_evidence",
    "parse_quote",
    "replay_event_log",
    "verify_tdx_quote",
]
