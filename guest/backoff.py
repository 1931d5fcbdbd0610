"""Retry of `503 ServerBusy` answers and of dropped connections: jittered exponential backoff honouring `Retry-After`.

A KBS at its in-flight limit refuses a request before doing any work for
it, so the request can be sent again. `RetryPolicy.delay` is how long to
wait before attempt `n + 1`: at least the server's `Retry-After` (capped
at `max_delay`, so a server cannot park a guest), plus an exponentially
growing, randomly jittered backoff, so that guests refused together do not
come back together. `retry_busy` runs an operation until it succeeds, fails
otherwise, or the attempts or the total time are used up (then the last
`ServerBusyError` is raised).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from trustee_common.errors import ServerBusyError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    #: Attempts in all, the first included.
    attempts: int = 6
    #: Backoff before the first retry; doubles each retry up to `max_backoff`.
    base_backoff: float = 0.2
    max_backoff: float = 5.0
    #: The longest wait before one retry, `Retry-After` included.
    max_delay: float = 30.0
    #: No retry starts later than this many seconds after the first attempt.
    total_seconds: float = 60.0

    def delay(self, retry: int, retry_after: float | None, jitter: float) -> float:
        """Seconds to wait before retry number `retry` (1-based); `jitter` is uniform in [0, 1)."""
        backoff = min(self.max_backoff, self.base_backoff * 2.0 ** (retry - 1)) * (0.5 + jitter / 2)
        floor = min(max(retry_after or 0.0, 0.0), self.max_delay)
        return min(floor + backoff, self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a `Retry-After` header (delay seconds or an HTTP date, RFC 9110 10.2.3); None if absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


async def retry_busy(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    what: str,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> T:
    """`await operation()`, again after a delay each time it raises `ServerBusyError`, within `policy`."""
    started = monotonic()
    retry = 0
    while True:
        try:
            return await operation()
        except ServerBusyError as busy:
            retry += 1
            wait = policy.delay(retry, busy.retry_after, jitter())
            if retry >= policy.attempts or monotonic() - started + wait > policy.total_seconds:
                raise
            logger.info("%s: %s; retry %d of %d in %.2f s", what, busy.detail, retry, policy.attempts - 1, wait)
            await sleep(wait)
