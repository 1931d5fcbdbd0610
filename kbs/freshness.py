"""The appraisal-epoch guard on resource release: a cached reading of the AS's epoch.

`check` refuses (401 `StaleAttestation`) a token appraised before the
attestation policies or reference values last changed. The current epoch
is fetched from the AS (`GetAppraisalEpoch`) at most once per `ttl`
seconds on the hot path; one fetch at a time, and every request waiting for
it uses its result. A token newer than the cached reading (the guest
attested again after a change) triggers one more fetch, begun after the
request arrived, so a fresh token is never refused. If the AS cannot be
reached, tokens that carry an epoch get 503 (fail closed); a failed fetch
is reused like a reading, so an AS outage costs one call per `ttl`, not
one timeout per waiting request. The decisions
are in `kbs.core.freshness`; this module knows no HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kbs.core.freshness import STALE_DETAIL, EpochReading, Verdict, judge, token_epoch
from kbs.metrics import KbsMetrics
from trustee_common.errors import StaleAttestationError, TrusteeError

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 1.0


class AppraisalEpochGuard:
    def __init__(
        self,
        source: Callable[[], Awaitable[str]],
        metrics: KbsMetrics,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._metrics = metrics
        self._ttl = ttl
        self._monotonic = monotonic
        self._wall = wall
        self._reading: EpochReading | None = None
        self._failure: tuple[float, TrusteeError] | None = None
        self._lock = asyncio.Lock()

    def now(self) -> float:
        """The monotonic time to pass to `check` as the request's arrival."""
        return self._monotonic()

    async def check(self, claims: dict[str, Any], received: float) -> None:
        """Return if the token is fresh (or carries no epoch); `StaleAttestationError` otherwise."""
        epoch = token_epoch(claims)
        if epoch is None:
            return
        verdict = judge(epoch, claims, await self._reading_since(received - self._ttl), received)
        if verdict is Verdict.RECHECK:
            verdict = judge(epoch, claims, await self._reading_since(received), received)
        if verdict is not Verdict.FRESH:
            self._metrics.stale_tokens.inc()
            logger.info("refused a token appraised under an older epoch")
            raise StaleAttestationError(STALE_DETAIL)

    async def _reading_since(self, not_before: float) -> EpochReading:
        """A reading whose fetch began at or after `not_before`, fetching one if needed."""
        reading = self._reading
        if reading is not None and reading.started >= not_before:
            return reading
        async with self._lock:
            reading = self._reading
            if reading is not None and reading.started >= not_before:
                return reading  # fetched by another request while this one waited
            failure = self._failure
            if failure is not None and failure[0] >= not_before:
                raise type(failure[1])(failure[1].detail)  # failed just now: do not queue another timeout
            started, started_wall = self._monotonic(), self._wall()
            try:
                value = await self._source()
            except TrusteeError as exc:
                self._failure = (started, exc)
                raise
            finally:
                self._metrics.epoch_fetches.inc()
            self._failure = None
            self._reading = EpochReading(value, started, started_wall)
            return self._reading
