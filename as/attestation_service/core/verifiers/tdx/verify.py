"""Full DCAP verification of a TDX quote with Intel QVL semantics (evidence.md 1.6), as numbered steps.

`evaluate_tdx_quote` never raises on bad evidence: it returns a
`TdxVerificationReport` listing every step (pass / fail / skipped) up to
the first failure, for `trustee verify`. `verify_tdx_quote` runs the same
code and raises the failing step's `EvidenceError` subclass, its message
starting `step N (name):`. Without collateral the collateral-dependent
steps (3, 5, 6, 9, 11-13) are reported as skipped: only the quote's own
signatures, QE binding and PCK chain (no revocation) are checked; callers
that need a verdict (the AS) pass `require_collateral=True`.

Expired collateral: with `accept_expired_collateral=False` (the default)
step 3 fails; with True it passes and the claims carry
`collateral_expiration_status = "1"`, which the default policy does not
accept as hardware-affirming.
"""
from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attestation_service.core.verifiers.steps import SkipStep, StepResult, VerificationReport, fail_step, run_steps
from attestation_service.core.verifiers.tdx.claims import quote_claims
from attestation_service.core.verifiers.tdx.collateral import CollateralVerifier, TdxCollateral
from attestation_service.core.verifiers.tdx.quote import QuoteParseError, parse_quote
from attestation_service.core.verifiers.tdx.steps import (
    INIT_DATA_SIZE,
    REPORT_DATA_SIZE,
    EventLogReplayer,
    EventLogResult,
    StepContext,
    TdxVerificationError,
    check_binding,
    replay,
    step_accept,
    step_converge,
    step_failure,
    step_header,
    step_match,
    step_module,
    step_pck_chain,
    step_platform,
    step_qe_binding,
    step_qe_identity,
    step_qe_signature,
    step_quote_signature,
    step_time,
    supplemental,
)
from trustee_common.errors import EvidenceError

__all__ = [
    "EventLogResult",
    "StepResult",
    "TdxVerificationError",
    "TdxVerificationInput",
    "TdxVerificationReport",
    "evaluate_tdx_quote",
    "verify_tdx_quote",
]


#: Kept for callers that name the report by TEE.
TdxVerificationReport = VerificationReport


# --- the pipeline -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TdxVerificationInput:
    quote: bytes
    now: datetime.datetime
    collateral: TdxCollateral | None = None
    report_data: bytes | None = None
    init_data_hash: bytes | None = None
    event_log: bytes | None = None
    accept_expired_collateral: bool = False
    require_collateral: bool = False


def evaluate_tdx_quote(
    request: TdxVerificationInput, verifier: CollateralVerifier | None = None, event_log_replayer: EventLogReplayer | None = None
) -> TdxVerificationReport:
    report = TdxVerificationReport()
    verifier = verifier if verifier is not None else CollateralVerifier()
    try:
        quote = parse_quote(request.quote)
    except QuoteParseError as exc:
        return fail_step(report, 1, "quote header and layout", exc)
    ctx = StepContext(quote, request.now)
    report.claims = quote_claims(quote)

    def collateral_step(_: StepContext) -> str:
        if request.collateral is None:
            if request.require_collateral:
                raise step_failure("no collateral for this quote")
            raise SkipStep("no collateral given: only the quote's signatures, QE binding and PCK chain are checked")
        try:
            ctx.collateral = verifier.verify(request.collateral)
        except EvidenceError as exc:
            raise step_failure(exc.detail) from None
        col = ctx.collateral
        if not col.current_at(ctx.now):
            ctx.expired = True
            window = f"{col.latest_issue.isoformat()} .. {col.earliest_expiration.isoformat()}"
            if not request.accept_expired_collateral:
                raise step_failure(f"collateral is not current at {ctx.now.isoformat()} (window {window})")
            return f"signatures verified; collateral EXPIRED (window {window}), collateral_expiration_status 1"
        return f"signatures and CRLs verified; current until {col.earliest_expiration.isoformat()}"

    steps: list[tuple[int, str, Callable[[StepContext], str]]] = [
        (1, "quote header and layout", step_header),
        (2, "verification time", step_time),
        (3, "collateral integrity", collateral_step),
        (4, "PCK certificate chain", lambda c: step_pck_chain(c, verifier.root)),
        (5, "PCK and TCB Info match", step_match),
        (6, "TDX module identity", step_module),
        (7, "QE report signature", step_qe_signature),
        (8, "QE report binding", step_qe_binding),
        (9, "QE identity", step_qe_identity),
        (10, "quote signature", step_quote_signature),
        (11, "platform TCB level", step_platform),
        (12, "TCB status convergence", step_converge),
        (13, "TCB status acceptance", step_accept),
        (14, "report data binding", lambda c: check_binding(c.quote.body.report_data, request.report_data, REPORT_DATA_SIZE)),
        (15, "init data binding", lambda c: check_binding(c.quote.body.mr_config_id, request.init_data_hash, INIT_DATA_SIZE)),
        (16, "event log replay", lambda c: replay(c, request.event_log, event_log_replayer)),
    ]
    if run_steps(report, ctx, steps):
        report.claims.update(supplemental(ctx))
    return report


def verify_tdx_quote(
    request: TdxVerificationInput, verifier: CollateralVerifier | None = None, event_log_replayer: EventLogReplayer | None = None
) -> dict[str, Any]:
    """The claims of a quote that passed every step; raises the failing step's error otherwise."""
    report = evaluate_tdx_quote(request, verifier, event_log_replayer)
    report.raise_for_failure()
    assert report.claims is not None
    return report.claims
