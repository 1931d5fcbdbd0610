"""The load generator: sample-TEE guest flows, closed loop (N clients) or open loop (arrivals at a rate).

A flow is what a guest does for one secret, with the real guest code
(`guest.kbs_protocol.KbsClient`): a fresh EC P-256 TEE key, `/auth`,
`/attest` (sample evidence) and `GET /resource` with the session cookie,
then opening the JWE. Each flow has its own `KbsClient` (its own cookie
jar), but flows share a connection pool (`aiohttp.TCPConnector`): one per
closed-loop client, one for the whole open-loop run. Connecting, TLS-free
loopback or not, is not what a flow measures, and a new pool per flow
doubled the generator's CPU.

Closed loop: each client runs flows back to back; a 503 `ServerBusy` is
retried with the guest's default backoff, as a real guest would. Open loop:
flows start at the given rate (Poisson or fixed-interval arrivals) whether
or not earlier ones finished, and a refusal is not retried
(`guest.backoff.NO_RETRY`) but counted. So is a connection the KBS closes
unanswered (`dropped`: at its `max_connections` cap it refuses new
connections); only other failures are errors.

`GeneratorPool` spreads an open loop's arrivals over several processes
(`python -m bench --generators N`), for machines where one generator's
event loop cannot keep up with the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bench.client import sample_evidence
from bench.procstat import own_cpu_seconds
from guest.backoff import NO_RETRY, RetryPolicy
from guest.kbs_protocol import ConnectionDroppedError, KbsClient
from trustee_common.errors import ServerBusyError, TrusteeError
from trustee_common.heap import settle_heap

RESOURCE = "default/bench/key"
SECRET = b"benchmark secret"
FLOW_TIMEOUT_SECONDS = 120.0
#: An open-loop run waits this long past its last arrival for flows still in flight.
DRAIN_SECONDS = 60.0
LAG_TICK_SECONDS = 0.01


@dataclass
class Outcomes:
    """What happened to each flow: latencies of the served ones, counts of the rest."""

    latencies: list[float] = field(default_factory=list)
    refused: int = 0
    #: Open loop: connections the server closed or reset without an answer (its connection cap under overload).
    dropped: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    #: Longest time from a flow's start (its arrival) until it was served or refused.
    max_wait: float = 0.0
    #: Longest time one HTTP request of a flow waited for its answer (status line and headers: served or refused).
    max_request_wait: float = 0.0
    #: Longest lateness of the load generator's own event loop (a 10 ms tick): above ~0.1 s the generator, not the
    #: servers, is the bottleneck, and every latency it measures includes that lag.
    max_generator_lag: float = 0.0
    #: CPU seconds of load-generator processes other than this one (`GeneratorPool`).
    other_generator_cpu: float = 0.0

    async def watch_lag(self) -> None:
        """Until cancelled: keep `max_generator_lag`."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_SECONDS
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.max_generator_lag = max(self.max_generator_lag, loop.time() - due)

    def request_timer(self) -> aiohttp.TraceConfig:
        """aiohttp hooks that keep `max_request_wait` (a failed request counts until it failed)."""
        trace = aiohttp.TraceConfig()

        async def started(_session: object, context: Any, _params: object) -> None:
            context.started = time.perf_counter()

        async def answered(_session: object, context: Any, _params: object) -> None:
            self.max_request_wait = max(self.max_request_wait, time.perf_counter() - context.started)

        trace.on_request_start.append(started)
        trace.on_request_end.append(answered)
        trace.on_request_exception.append(answered)
        return trace

    @classmethod
    def merged(cls, parts: list[Outcomes]) -> Outcomes:
        """The outcomes of load generators that ran side by side, as if one had run them all."""
        whole = cls()
        for part in parts:
            whole.latencies += part.latencies
            whole.refused += part.refused
            whole.dropped += part.dropped
            whole.errors += part.errors
            whole.error_samples += part.error_samples[: max(0, 5 - len(whole.error_samples))]
            whole.max_wait = max(whole.max_wait, part.max_wait)
            whole.max_request_wait = max(whole.max_request_wait, part.max_request_wait)
            whole.max_generator_lag = max(whole.max_generator_lag, part.max_generator_lag)
            whole.other_generator_cpu += part.other_generator_cpu
        return whole

    @property
    def served(self) -> int:
        return len(self.latencies)

    def record_error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


async def one_flow(url: str, connector: aiohttp.BaseConnector, retry: RetryPolicy | None,
                   traces: tuple[aiohttp.TraceConfig, ...] = ()) -> None:
    client = KbsClient(url, evidence=sample_evidence(), timeout=FLOW_TIMEOUT_SECONDS, retry=retry, connector=connector,
                       trace_configs=traces)
    async with client:
        if await client.get_resource(f"resource/{RESOURCE}") != SECRET:
            raise AssertionError("the resource came back different")


def dropped_connection(exc: BaseException) -> bool:
    """The KBS closed or reset the connection without answering (not a 503, not a wrong answer)."""
    return isinstance(exc, ConnectionDroppedError)


async def timed_flow(url: str, connector: aiohttp.BaseConnector, retry: RetryPolicy | None, outcomes: Outcomes,
                     *, drops_allowed: bool = False, traces: tuple[aiohttp.TraceConfig, ...] = ()) -> None:
    start = time.perf_counter()
    try:
        await one_flow(url, connector, retry, traces)
    except ServerBusyError as exc:
        if dropped_connection(exc):  # after the retries, if any
            if drops_allowed:
                outcomes.dropped += 1
            else:
                outcomes.record_error(exc)
            return
        outcomes.refused += 1
    except (TrusteeError, AssertionError, aiohttp.ClientError, TimeoutError) as exc:
        outcomes.record_error(exc)
        return
    else:
        outcomes.latencies.append(time.perf_counter() - start)
    outcomes.max_wait = max(outcomes.max_wait, time.perf_counter() - start)


def connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=0, force_close=False)


async def closed_loop(url: str, clients: int, count: int) -> Outcomes:
    """`count` flows by `clients` concurrent clients, each with its own connection pool."""
    outcomes = Outcomes()
    counter = itertools.count()

    async def client() -> None:
        async with connector() as pool:
            while next(counter) < count:
                await timed_flow(url, pool, None, outcomes)

    lag = asyncio.create_task(outcomes.watch_lag())
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        lag.cancel()
    return outcomes


def arrival_gaps(rate: float, poisson: bool, rng: random.Random) -> Callable[[], float]:
    return (lambda: rng.expovariate(rate)) if poisson else (lambda: 1.0 / rate)


async def open_loop(url: str, rate: float, seconds: float, *, poisson: bool = True, seed: int = 1) -> Outcomes:
    """Flows arriving at `rate` per second for `seconds`; each is one attempt (a refusal is counted, not retried)."""
    outcomes = Outcomes()
    gap = arrival_gaps(rate, poisson, random.Random(seed))  # noqa: S311 (arrival times, not secrets)
    traces = (outcomes.request_timer(),)
    tasks: set[asyncio.Task[None]] = set()
    lag = asyncio.create_task(outcomes.watch_lag())
    async with connector() as pool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        due = start
        while due - start < seconds:
            await sleep_until(loop.time, due)
            task = asyncio.create_task(timed_flow(url, pool, NO_RETRY, outcomes, drops_allowed=True, traces=traces))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += gap()
        if tasks:
            await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in list(tasks):
            task.cancel()
            outcomes.record_error(TimeoutError(f"flow still running {DRAIN_SECONDS:g} s after the last arrival"))
    lag.cancel()
    return outcomes


async def sleep_until(clock: Callable[[], float], due: float) -> None:
    delay = due - clock()
    if delay > 0:
        await asyncio.sleep(delay)


async def warm_up(url: str, flows: int) -> None:
    await closed_loop(url, min(4, flows), flows)


def _generator(commands: Connection) -> None:
    """A `GeneratorPool` process: run each open loop it is sent, answer its outcomes and own CPU seconds."""
    settle_heap()
    while (command := commands.recv()) is not None:
        url, rate, seconds, poisson, seed = command
        started = own_cpu_seconds()
        try:
            outcomes = asyncio.run(open_loop(url, rate, seconds, poisson=poisson, seed=seed))
        except Exception as exc:  # reported to the parent, which stops the run with it
            commands.send(f"{type(exc).__name__}: {exc}")
            continue
        outcomes.other_generator_cpu = own_cpu_seconds() - started
        commands.send(outcomes)


class GeneratorPool:
    """`processes` load-generator processes that share each open loop's arrivals (each runs a Poisson or fixed
    stream of rate / processes, with a seed of its own), so that no single generator's event loop falls behind
    at high rates. Started before the measurement (spawning and importing take a second or so)."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._links: list[Connection] = []
        self._processes = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(target=_generator, args=(theirs,), daemon=True)
            process.start()
            self._links.append(ours)
            self._processes.append(process)

    async def open_loop(self, url: str, rate: float, seconds: float, *, poisson: bool = True, seed: int = 1) -> Outcomes:
        share = rate / len(self._links)
        for index, link in enumerate(self._links):
            link.send((url, share, seconds, poisson, seed + index))
        parts = []
        for answer in await asyncio.gather(*(asyncio.to_thread(self._answer, link) for link in self._links)):
            if not isinstance(answer, Outcomes):
                raise RuntimeError(f"a load-generator process failed: {answer}")
            parts.append(answer)
        return Outcomes.merged(parts)

    @staticmethod
    def _answer(link: Connection) -> object:
        try:
            return link.recv()
        except EOFError:
            return "it exited"

    def close(self) -> None:
        for link in self._links:
            with contextlib.suppress(OSError):
                link.send(None)
        for process in self._processes:
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join()
