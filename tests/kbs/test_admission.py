"""The admission limit follows the median latency of admitted requests (kbs.core.admission, pure: time is passed in)."""

from __future__ import annotations

import pytest

from kbs.core.admission import WINDOW_SAMPLES, WINDOW_SECONDS, AdmissionLimit


def run_window(limit: AdmissionLimit, latencies: list[float], start: float, *, reached: bool = False) -> float:
    """Feed one window's completions; returns the time at its end."""
    if reached:
        limit.reached()
    step = WINDOW_SECONDS / (len(latencies) - 1)
    now = start
    for index, latency in enumerate(latencies):
        now = start + index * step
        limit.observe(latency, now)
    return now + 1e-6


def test_starts_at_the_ceiling_and_stays_there_while_latency_is_within_target() -> None:
    limit = AdmissionLimit(64, 0.2)
    now = 0.0
    for _ in range(20):
        now = run_window(limit, [0.01] * 10, now, reached=True)
    assert limit.limit == 64


def test_overshoot_cuts_in_proportion_at_most_by_half() -> None:
    limit = AdmissionLimit(64, 0.2)
    run_window(limit, [0.4] * 10, 0.0)
    assert limit.limit == 32  # median twice the target: halved
    limit = AdmissionLimit(64, 0.2)
    run_window(limit, [0.25] * 10, 0.0)
    assert limit.limit == 51  # 64 * 0.2 / 0.25
    limit = AdmissionLimit(64, 0.2)
    run_window(limit, [5.0] * 10, 0.0)
    assert limit.limit == 32  # never more than halved per window


def test_never_below_the_floor_and_recovers_only_when_the_limit_was_reached() -> None:
    limit = AdmissionLimit(64, 0.2)
    now = 0.0
    for _ in range(20):
        now = run_window(limit, [1.0] * 10, now)
    assert limit.limit == 16  # the floor: 16, half the ceiling being more
    now = run_window(limit, [0.01] * 10, now)
    assert limit.limit == 16  # fast again, but nobody was refused: no reason to grow
    now = run_window(limit, [0.01] * 10, now, reached=True)
    assert limit.limit == 17
    for _ in range(60):
        now = run_window(limit, [0.01] * 10, now, reached=True)
    assert limit.limit == 64  # back to the ceiling, never above


def test_the_median_ignores_a_minority_of_slow_requests() -> None:
    """A few slow clients (say, sending their bodies slowly) cannot shrink the limit for everyone."""
    limit = AdmissionLimit(64, 0.2)
    run_window(limit, [30.0] * 4 + [0.01] * 6, 0.0)
    assert limit.limit == 64


def test_a_full_window_of_samples_ends_early() -> None:
    limit = AdmissionLimit(64, 0.2)
    for _ in range(WINDOW_SAMPLES):
        limit.observe(1.0, 0.0)  # all at the same instant
    assert limit.limit == 32


def test_target_zero_keeps_the_configured_limit() -> None:
    limit = AdmissionLimit(8, 0.0)
    run_window(limit, [10.0] * 10, 0.0)
    assert (limit.limit, limit.adaptive) == (8, False)


@pytest.mark.parametrize(("ceiling", "floor"), [(64, 16), (20, 10), (8, 4), (2, 1), (1, 1)])
def test_a_small_ceiling_is_cut_at_most_to_half(ceiling: int, floor: int) -> None:
    limit = AdmissionLimit(ceiling, 0.2)
    for start in range(10):
        run_window(limit, [3.0] * 10, float(start))
    assert (limit.floor, limit.limit) == (floor, floor)
