"""The admission limit: how many requests one KBS process takes on at once, following their latency.

A fixed bound on requests in progress cannot be right for every machine
and every mix of requests: too high and, under overload, every admitted
request waits behind the others for seconds; too low and a fast machine
refuses work it could do. `AdmissionLimit` starts at the configured
ceiling (`max_in_flight_requests`) and adjusts itself once per window
(`WINDOW_SECONDS`, or `WINDOW_SAMPLES` completed requests, whichever
comes first) from the median latency of the requests that completed in
the window:

* median above the target (`admission_target_latency_ms`): the limit is
  cut in proportion to the overshoot (`limit * target / median`, at most
  halved per window, never below `floor`: 16, or half the ceiling if less), so the queue the admitted
  requests wait in shrinks to what is served within the target;
* median within the target and the limit was reached in the window (a
  request was refused, or as many were in progress as the limit): the
  limit grows by a tenth (at least 1), up to the ceiling.

The median, not the mean, so a minority of slow requests (a client sending
its body slowly, one slow policy) cannot shrink the limit for everyone.
A target of 0 turns adaptation off: the limit stays at the ceiling.
Pure: time and latencies are passed in.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

#: Longest window between two adjustments.
WINDOW_SECONDS = 0.1
#: Completed requests that end a window early (and bound the samples kept).
WINDOW_SAMPLES = 256
#: The limit is never cut below this, nor below half the ceiling when that is lower (so a small
#: configured limit is never cut to nothing, and bursts of up to 16 requests per process are always admitted).
DEFAULT_FLOOR = 16
#: At most this factor per window downwards.
MAX_CUT = 0.5


@dataclass
class AdmissionLimit:
    ceiling: int
    target_seconds: float
    floor: int = 0
    limit: int = 0
    _window_start: float | None = None
    _samples: list[float] = field(default_factory=list)
    _reached: bool = False

    def __post_init__(self) -> None:
        self.floor = max(1, min(self.floor or DEFAULT_FLOOR, self.ceiling // 2 or 1, self.ceiling))
        self.limit = self.ceiling

    @property
    def adaptive(self) -> bool:
        return self.target_seconds > 0

    def reached(self) -> None:
        """The limit was hit in this window (a request refused, or the limit's worth in progress)."""
        self._reached = True

    def observe(self, latency: float, now: float) -> None:
        """One completed request took `latency` seconds; adjust the limit when the window is over."""
        if not self.adaptive:
            return
        if self._window_start is None:
            self._window_start = now
        self._samples.append(latency)
        if now - self._window_start >= WINDOW_SECONDS or len(self._samples) >= WINDOW_SAMPLES:
            self._adjust(statistics.median(self._samples))
            self._samples.clear()
            self._window_start, self._reached = now, False

    def _adjust(self, median: float) -> None:
        if median > self.target_seconds:
            cut = max(MAX_CUT, self.target_seconds / median)
            self.limit = max(self.floor, int(self.limit * cut))
        elif self._reached:
            self.limit = min(self.ceiling, self.limit + max(1, self.limit // 10))
