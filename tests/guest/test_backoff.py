"""`guest.backoff`: the retry delays and bounds for a busy KBS, with explicit clocks and jitter."""

from __future__ import annotations

import email.utils

import pytest

from guest.backoff import RetryPolicy, parse_retry_after, retry_busy
from trustee_common.errors import MalformedRequestError, ServerBusyError


def test_delay_honours_retry_after_and_grows_with_jitter() -> None:
    policy = RetryPolicy(base_backoff=0.2, max_backoff=5.0, max_delay=30.0)
    assert policy.delay(1, None, 0.0) == pytest.approx(0.1)
    assert policy.delay(1, None, 0.999999) == pytest.approx(0.2)
    assert policy.delay(3, None, 0.0) == pytest.approx(0.4)
    assert policy.delay(20, None, 0.999999) == pytest.approx(5.0)  # capped backoff
    assert 2.0 <= policy.delay(1, 2.0, 0.5) <= 2.2  # never earlier than Retry-After, jittered on top
    assert policy.delay(1, 10_000.0, 0.5) == 30.0  # a server cannot park the guest


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", 0.0) == 3.0
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after("-1", 0.0) is None
    assert parse_retry_after(email.utils.formatdate(1000.0, usegmt=True), 990.0) == 10.0
    assert parse_retry_after(email.utils.formatdate(1000.0, usegmt=True), 2000.0) == 0.0


class Script:
    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0
        self.sleeps: list[float] = []
        self.now = 0.0

    async def operation(self) -> str:
        self.calls += 1
        if self.calls <= self.busy:
            raise ServerBusyError("busy", retry_after=1.0)
        return "done"

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_retries_until_success() -> None:
    script = Script(busy=2)
    assert await retry_busy(script.operation, RetryPolicy(), "op", sleep=script.sleep, monotonic=lambda: script.now,
                            jitter=lambda: 0.0) == "done"
    assert script.calls == 3 and all(s >= 1.0 for s in script.sleeps)


async def test_attempts_and_total_time_are_bounded() -> None:
    script = Script(busy=100)
    with pytest.raises(ServerBusyError):
        await retry_busy(script.operation, RetryPolicy(attempts=4), "op", sleep=script.sleep, monotonic=lambda: script.now)
    assert script.calls == 4
    script = Script(busy=100)
    with pytest.raises(ServerBusyError):
        await retry_busy(script.operation, RetryPolicy(attempts=100, total_seconds=5.0), "op", sleep=script.sleep,
                         monotonic=lambda: script.now)
    assert script.now <= 5.0 and script.calls < 10


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise MalformedRequestError("bad")

    with pytest.raises(MalformedRequestError):
        await retry_busy(failing, RetryPolicy(), "op")
    assert calls == 1
