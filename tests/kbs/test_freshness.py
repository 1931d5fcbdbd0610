"""The appraisal-epoch guard (`kbs.freshness`) with explicit clocks and a scripted epoch source.

The source stands in for the AS's `GetAppraisalEpoch` (the real one is in
tests/scaleout/test_token_freshness.py); it counts calls, so these tests
pin the hot-path cost: one AS call per `ttl`, none for tokens without an
epoch, one shared call for concurrent requests, and no call for a token
obviously older than the reading.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kbs.freshness import AppraisalEpochGuard
from kbs.metrics import KbsMetrics
from trustee_common.epoch import CLAIM
from trustee_common.errors import StaleAttestationError, UpstreamError

WALL0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t


class Source:
    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise UpstreamError("attestation service unreachable")
        return self.value


def guard(source: Source, clock: Clock, ttl: float = 1.0) -> AppraisalEpochGuard:
    return AppraisalEpochGuard(source, KbsMetrics(), ttl=ttl, monotonic=clock.monotonic, wall=clock.wall)


def token(epoch: object, clock: Clock, age: float = 0.0) -> dict[str, Any]:
    return {CLAIM: epoch, "iat": int(clock.wall() - age)}


async def test_tokens_without_an_epoch_cost_nothing() -> None:
    clock, source = Clock(), Source("e1")
    await guard(source, clock).check({"iat": 1}, clock.t)
    assert source.calls == 0


async def test_one_reading_per_ttl_on_the_hot_path() -> None:
    clock, source = Clock(), Source("e1")
    g = guard(source, clock)
    for _ in range(50):
        await g.check(token("e1", clock), clock.t)
        clock.t += 0.01
    assert source.calls == 1
    clock.t += 1.0
    await g.check(token("e1", clock), clock.t)
    assert source.calls == 2


async def test_a_change_is_seen_within_the_ttl() -> None:
    clock, source = Clock(), Source("e1")
    g = guard(source, clock)
    old = token("e1", clock)
    await g.check(old, clock.t)
    source.value = "e2"
    clock.t += 1.01
    with pytest.raises(StaleAttestationError):
        await g.check(old, clock.t)


async def test_a_token_newer_than_the_reading_is_rechecked_once_and_accepted() -> None:
    clock, source = Clock(), Source("e1")
    g = guard(source, clock)
    await g.check(token("e1", clock), clock.t)
    source.value = "e2"  # the guest attested again after a change the reading has not seen
    clock.t += 0.2
    await g.check(token("e2", clock), clock.t)
    assert source.calls == 2
    await g.check(token("e2", clock), clock.t)
    assert source.calls == 2


async def test_an_old_token_is_refused_without_asking_the_as() -> None:
    clock, source = Clock(), Source("e2")
    g = guard(source, clock)
    await g.check(token("e2", clock), clock.t)
    clock.t += 0.2
    with pytest.raises(StaleAttestationError):
        await g.check(token("e1", clock, age=120.0), clock.t)
    assert source.calls == 1


async def test_a_stale_token_after_a_recheck_is_refused() -> None:
    clock, source = Clock(), Source("e2")
    g = guard(source, clock)
    await g.check(token("e2", clock), clock.t)
    clock.t += 0.2
    with pytest.raises(StaleAttestationError):
        await g.check(token("e1", clock), clock.t)  # recent iat: one recheck, still different
    assert source.calls == 2


async def test_concurrent_requests_share_one_fetch() -> None:
    clock, source = Clock(), Source("e1")
    g = guard(source, clock)
    source.gate = asyncio.Event()
    checks = [asyncio.create_task(g.check(token("e1", clock), clock.t)) for _ in range(20)]
    await asyncio.sleep(0.01)
    source.gate.set()
    await asyncio.gather(*checks)
    assert source.calls == 1


async def test_non_string_epoch_is_refused() -> None:
    clock, source = Clock(), Source("e1")
    with pytest.raises(StaleAttestationError):
        await guard(source, clock).check(token(7, clock), clock.t)


async def test_unreachable_as_fails_closed_once_per_ttl_and_is_retried() -> None:
    clock, source = Clock(), Source("e1")
    g = guard(source, clock)
    source.fail = True
    source.gate = asyncio.Event()
    checks = [asyncio.create_task(g.check(token("e1", clock), clock.t)) for _ in range(10)]
    await asyncio.sleep(0.01)
    source.gate.set()
    results = await asyncio.gather(*checks, return_exceptions=True)
    assert all(isinstance(r, UpstreamError) for r in results)
    assert source.calls == 1  # the waiting requests share the failure instead of queueing timeouts
    source.fail = False
    clock.t += 1.01
    await g.check(token("e1", clock), clock.t)
    assert source.calls == 2
