"""A pure verifier plus an async `prepare(evidence)` hook (adapter).

Some verifiers look up material that may have to be fetched first (DCAP
collateral from a PCS/PCCS, VCEKs from AMD KDS). The service awaits
`prepare` before it calls the pure, synchronous `evaluate`; the hook only
fills the caches the verifier's lookup reads, and leaves every verdict to
the verifier.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable

from attestation_service.core.verifier import Claims, Verifier


class FetchingVerifier:
    def __init__(self, tee: str, verifier: Verifier, prepare: Callable[[object], Awaitable[None]]) -> None:
        self.tee = tee
        self._verifier = verifier
        self.prepare = prepare

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        return self._verifier.evaluate(evidence, expected_report_data, expected_init_data_hash, now)
