"""`tdx` (class cpu): the AS verifier around `verify_tdx_quote`.

Evidence is upstream's `{"quote": <standard base64>, "cc_eventlog": <standard base64> | null}`.
Collateral is chosen by the PCK leaf's FMSPC and issuing CA (`platform` /
`processor`) through a `CollateralLookup` that adapters fill (offline
bundle directory, PCS/PCCS cache); the AS never verifies without it.
`verification_time`, when set, replaces the service clock for DCAP checks
only (test-only configuration, see the AS README).
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Callable

from cryptography import x509

from attestation_service.core.verifier import Claims
from attestation_service.core.verifiers.tdx.collateral import CollateralVerifier, TdxCollateral, ca_type_of
from attestation_service.core.verifiers.tdx.pck import parse_pck_extension
from attestation_service.core.verifiers.tdx.quote import TdxQuote, parse_quote
from attestation_service.core.verifiers.tdx.verify import (
    EventLogResult,
    TdxVerificationError,
    TdxVerificationInput,
    verify_tdx_quote,
)
from trustee_common.b64 import std_decode
from trustee_common.errors import EvidenceError, MalformedRequestError

#: `(fmspc lower-case hex, "platform" | "processor") -> bundle or None`.
CollateralLookup = Callable[[str, str], TdxCollateral | None]
EVENTLOG_MODULE = "attestation_service.core.eventlog"


def replay_event_log(data: bytes) -> EventLogResult | None:
    """Integration point with `attestation_service.core.eventlog`; None when that module is absent."""
    try:
        eventlog = importlib.import_module(EVENTLOG_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is not None and EVENTLOG_MODULE.startswith(exc.name):
            return None
        raise
    log = eventlog.parse_event_log(data)
    rtmrs: list[bytes] = list(log.replay(registers=4))
    claims: list[dict[str, object]] = list(log.to_claims())
    return EventLogResult(rtmrs, claims)


def parse_evidence(evidence: object) -> tuple[bytes, bytes | None]:
    """`(quote, cc_eventlog)` from the wire JSON."""
    if not isinstance(evidence, dict):
        raise MalformedRequestError("evidence (tdx): must be a JSON object")
    quote = evidence.get("quote")
    if not isinstance(quote, str):
        raise MalformedRequestError("evidence (tdx): field 'quote' is missing or not a string")
    log = evidence.get("cc_eventlog")
    if log is not None and not isinstance(log, str):
        raise MalformedRequestError("evidence (tdx): field 'cc_eventlog' must be a string or null")
    return std_decode(quote, "evidence (tdx) quote"), None if log is None else std_decode(log, "evidence (tdx) cc_eventlog")


def collateral_key(quote: TdxQuote) -> tuple[str, str]:
    """The FMSPC and PCK CA type a quote needs collateral for, read from its PCK leaf (not yet verified)."""
    try:
        leaf = x509.load_pem_x509_certificates(quote.certification.pck_chain_pem)[0]
    except (ValueError, IndexError):
        raise TdxVerificationError("step 4 (PCK certificate chain): not a PEM certificate chain") from None
    try:
        fmspc = parse_pck_extension(leaf).fmspc.hex()
    except EvidenceError as exc:
        raise TdxVerificationError(f"step 4 (PCK certificate chain): {exc.detail}") from None
    kind = ca_type_of(leaf.issuer)
    if kind is None:
        raise TdxVerificationError("step 4 (PCK certificate chain): the PCK leaf is not issued by the Platform or Processor CA")
    return fmspc, kind


class TdxVerifier:
    tee = "tdx"

    def __init__(
        self,
        collateral: CollateralLookup | None = None,
        *,
        accept_expired_collateral: bool = False,
        verification_time: datetime.datetime | None = None,
        collateral_verifier: CollateralVerifier | None = None,
    ) -> None:
        self._lookup = collateral
        self._accept_expired = accept_expired_collateral
        self._pinned_time = verification_time
        self._verifier = collateral_verifier if collateral_verifier is not None else CollateralVerifier()

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        quote_bytes, event_log = parse_evidence(evidence)
        fmspc, kind = collateral_key(_parse_or_step1(quote_bytes))
        bundle = None if self._lookup is None else self._lookup(fmspc, kind)
        if bundle is None:
            raise TdxVerificationError(
                f"step 3 (collateral integrity): no collateral for FMSPC {fmspc.upper()} ({kind} CA): the TCB cannot be"
                " appraised without it ([verifier_config.dcap_verifier] collateral_dir or collateral_service)"
            )
        request = TdxVerificationInput(
            quote=quote_bytes,
            now=self._pinned_time if self._pinned_time is not None else now,
            collateral=bundle,
            report_data=expected_report_data,
            init_data_hash=expected_init_data_hash,
            event_log=event_log,
            accept_expired_collateral=self._accept_expired,
            require_collateral=True,
        )
        return [(verify_tdx_quote(request, self._verifier, replay_event_log), "cpu")]


def _parse_or_step1(data: bytes) -> TdxQuote:
    try:
        return parse_quote(data)
    except EvidenceError as exc:
        raise type(exc)(f"step 1 (quote header and layout): {exc.detail}") from None
