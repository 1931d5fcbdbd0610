"""Overload shedding: a bound on the requests one KBS process works on at once.

Past the bound a request is refused at once with 503 `ServerBusy` and a
`Retry-After` header, before any work is done for it (nothing is read,
stored or asked of the AS), instead of queueing behind the others: under a
burst the requests admitted keep their latency and the rest learn within
milliseconds to come back later (the guest client retries with jittered
backoff). The counter never waits, so refusing costs one dictionary lookup.

The bound is `kbs.core.admission.AdmissionLimit`: it starts at
`max_in_flight_requests` and follows the median latency of the admitted
requests, so that under overload the requests admitted are served within
`admission_target_latency_ms` instead of waiting behind a long queue.

New sessions go first: `POST /kbs/v0/auth` is admitted only while fewer
than three quarters of the bound requests are in progress. The last quarter is kept for guests already inside a flow
(`/attest`, the resource request), so under overload the flows that were
admitted finish instead of every flow being refused half way, and the work
already done for them (a session, an attestation) is not wasted.

`/healthz` and `/metrics` are never counted nor refused: a probe or a
scrape must see an overloaded KBS as alive. Admin endpoints are counted
like the others: the admin token is checked by the handler, after this
middleware, so exempting admin paths would let anyone bypass the bound;
`kbs-client` retries `ServerBusy` as the guest does.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from kbs.core.admission import AdmissionLimit
from kbs.http.errors import Handler, error_response
from kbs.metrics import KbsMetrics
from trustee_common.errors import ServerBusyError

logger = logging.getLogger(__name__)

#: Paths never shed.
EXEMPT_PATHS = frozenset({"/healthz", "/metrics"})
#: The path that starts a new flow (admitted only below `new_session_limit`).
NEW_SESSION_PATH = "/kbs/v0/auth"
#: Seconds between two warnings about refused requests.
LOG_INTERVAL_SECONDS = 10.0


class LoadShedder:
    """Counts requests in progress; `middleware` refuses those above the admission limit."""

    def __init__(self, limit: int, retry_after_seconds: int, metrics: KbsMetrics | None = None,
                 target_latency_seconds: float = 0.0) -> None:
        self.admission = AdmissionLimit(limit, target_latency_seconds)
        self.retry_after_seconds = retry_after_seconds
        self.in_flight = 0
        self._metrics = metrics
        self._last_log = 0.0
        self._refused_since_log = 0
        self._shown_limit = limit
        if metrics is not None:
            metrics.admission_limit.set(limit)

    @property
    def limit(self) -> int:
        return self.admission.limit

    @property
    def new_session_limit(self) -> int:
        return max(1, self.admission.limit * 3 // 4)

    def _refuse(self) -> web.Response:
        self.admission.reached()
        if self._metrics is not None:
            self._metrics.requests_shed.inc()
        self._report()
        detail = f"the KBS is at its limit of {self.limit} requests in progress; retry after {self.retry_after_seconds} s"
        return error_response(ServerBusyError(detail, retry_after=self.retry_after_seconds))

    def _report(self) -> None:
        """One warning per `LOG_INTERVAL_SECONDS` with the count refused since the last one."""
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log < LOG_INTERVAL_SECONDS:
            return
        logger.warning("at the admission limit of %d requests in progress (max_in_flight_requests %d): refused %d request(s) "
                       "with 503 ServerBusy since the last report", self.limit, self.admission.ceiling, self._refused_since_log)
        self._last_log, self._refused_since_log = now, 0

    def _done(self, started: float) -> None:
        self.in_flight -= 1
        now = time.monotonic()
        self.admission.observe(now - started, now)
        if self._metrics is not None:
            self._metrics.requests_in_flight.dec()
            if self.admission.limit != self._shown_limit:
                self._shown_limit = self.admission.limit
                self._metrics.admission_limit.set(self._shown_limit)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        if self.in_flight >= self.limit or (self.in_flight >= self.new_session_limit and request.path == NEW_SESSION_PATH):
            return self._refuse()
        self.in_flight += 1
        if self.in_flight >= self.limit:
            self.admission.reached()
        if self._metrics is not None:
            self._metrics.requests_in_flight.inc()
        started = time.monotonic()
        try:
            return await handler(request)
        finally:
            self._done(started)
