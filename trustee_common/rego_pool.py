"""Rego evaluation in a pool of worker processes, each call bounded in time.

Why processes: regopy's native calls release the GIL, so a thread would
keep the event loop responsive, but a native evaluation cannot be
cancelled: a policy that loops for minutes would keep a thread and a core
busy, and a few such requests would exhaust any thread pool. A worker
process (`trustee_common.rego_worker`) can be killed. Each call (compile or
evaluate) must answer within `timeout` seconds; otherwise the worker is
killed, a fresh one is started in the background, and the call fails with
`PolicyEngineUnavailableError` (HTTP 503 / gRPC UNAVAILABLE). Waiting for a
free worker is bounded by the same timeout. Other requests are served
meanwhile: this module awaits pipes and never blocks the event loop.

The hot path sends only the policy digest, the input and the per-request
data (JSON); a worker is sent a policy's text once, when it answers that it
has not compiled that digest. Workers run with an empty environment.

The input is first trimmed to what the policy's text can read
(`trustee_common.rego_reads`). Results of deterministic policies (no
built-in in `NONDETERMINISTIC_BUILTINS`, as the worker reports when it
compiles them) are kept in an LRU of `result_cache_entries`, keyed by the
SHA-256 of the policy digest, the trimmed input and the data (canonical
JSON, at most `MAX_CACHE_KEY_BYTES`; results up to `MAX_CACHED_RESULT_BYTES`,
so the cache stays within `result_cache_entries` x 8 KiB whatever clients
send): a pure function of its key, so an
entry is never stale and needs no invalidation across processes or
replicas. A changed policy has another digest; changed reference values,
resource paths or claims are other data or input.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

from trustee_common.errors import (
    InternalError,
    InvalidPolicyError,
    PolicyEngineUnavailableError,
    TrusteeError,
    error_from_variant,
)
from trustee_common.lru import BoundedLru
from trustee_common.rego import PolicyEngineConfig, PolicySpec
from trustee_common.rego_reads import InputPaths, input_paths, trim_input

logger = logging.getLogger(__name__)

#: Starting a worker (Python + regopy import) is not bounded by the evaluation timeout.
START_TIMEOUT_SECONDS = 60.0
#: Compiling depends on the policy text (admin-controlled), not on client input: its own, larger bound.
MIN_COMPILE_TIMEOUT_SECONDS = 10.0
#: Waiting for a free worker: a busy one frees up within the timeout, a killed one is replaced in seconds.
WORKER_WAIT_GRACE_SECONDS = 10.0
#: How often a running call checks its worker's resident memory.
MEMORY_POLL_SECONDS = 0.05
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
#: Larger inputs + data are evaluated every time (they rarely repeat; hashing them costs).
MAX_CACHE_KEY_BYTES = 64 * 1024
#: Larger results are not kept: the cache holds at most `result_cache_entries` times this.
MAX_CACHED_RESULT_BYTES = 8 * 1024
#: Policies whose input paths and determinism the pool remembers.
PLAN_CACHE_SIZE = 256
_HEADER = struct.Struct(">I")


class _Replies(asyncio.SubprocessProtocol):
    """A worker's stdout split into reply frames; each frame resolves the one pending request."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[dict[str, Any]] | None = None
        self.lost: BaseException | None = None
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd != 1:
            return
        self.buffer += data if isinstance(data, bytes) else data.encode()
        if len(self.buffer) < _HEADER.size:
            return
        (length,) = _HEADER.unpack_from(self.buffer)
        if len(self.buffer) < _HEADER.size + length:
            return
        body = bytes(self.buffer[_HEADER.size : _HEADER.size + length])
        del self.buffer[: _HEADER.size + length]
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():  # the call was abandoned; its worker is being replaced
            return
        try:
            reply = json.loads(body)
            if not isinstance(reply, dict):
                raise ValueError("worker reply is not an object")
        except ValueError as exc:
            waiter.set_exception(exc)
        else:
            waiter.set_result(reply)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._fail(EOFError("policy worker closed its output"))

    def process_exited(self) -> None:
        self._fail(EOFError("policy worker exited"))
        if not self.exited.done():
            self.exited.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.lost = self.lost or exc
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _Worker:
    """One worker process; requests are written to its stdin, replies arrive through `_Replies`."""

    def __init__(self, transport: asyncio.SubprocessTransport, replies: _Replies) -> None:
        self.transport = transport
        self.replies = replies
        self.pid: int = transport.get_pid()

    @classmethod
    async def start(cls) -> _Worker:
        loop = asyncio.get_running_loop()
        transport, replies = await loop.subprocess_exec(
            _Replies,
            sys.executable,
            "-m",
            "trustee_common.rego_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=_worker_environment(),
        )
        worker = cls(transport, replies)
        try:
            await asyncio.wait_for(worker.send({"op": "stats"}), START_TIMEOUT_SECONDS)
        except BaseException:
            await asyncio.shield(worker.kill())
            raise
        return worker

    def send(self, request: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Write one request; the future is the reply (EOFError if the worker is gone, ValueError if garbled)."""
        if self.replies.lost is not None:
            raise EOFError("policy worker is gone")
        if self.replies.waiter is not None:
            raise ValueError("policy worker has a request in flight")
        stdin = self.transport.get_pipe_transport(0)
        if stdin is None or stdin.is_closing():
            raise EOFError("policy worker input is closed")
        body = json.dumps(request).encode()
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies.waiter = waiter
        stdin.write(_HEADER.pack(len(body)) + body)  # type: ignore[attr-defined]  # a WriteTransport
        return waiter

    def rss_bytes(self) -> int:
        """Resident memory of the worker (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/statm", encoding="ascii") as statm:
                return int(statm.read().split()[1]) * _PAGE_BYTES
        except (OSError, ValueError, IndexError):
            return 0

    def signal_kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.transport.kill()

    async def kill(self) -> None:
        self.signal_kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(self.replies.exited)  # shared by every kill() of this worker: never cancel it
        self.transport.close()


class _IdleWorkers:
    """Idle workers, handed out in the order callers asked; a caller waits at most its timeout.

    (An asyncio.Queue with wait_for costs a task and several callbacks per wait.)
    """

    def __init__(self) -> None:
        self._free: collections.deque[_Worker] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Worker | None]] = collections.deque()

    def put(self, worker: _Worker) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._free.append(worker)

    async def take(self, patience: float) -> _Worker | None:
        """A free worker, or None when none became free within `patience` seconds."""
        if self._free:  # put() serves waiters first, so nobody is waiting
            return self._free.popleft()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Worker | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(patience, _give_up, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and (handed := waiter.result()) is not None:
                self.put(handed)  # handed to us just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()


def _give_up(waiter: asyncio.Future[_Worker | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _nothing() -> None:
    return None


class RegoPool:
    """`workers` worker processes; every compile or evaluation answers within `timeout` seconds."""

    def __init__(
        self,
        *,
        workers: int = PolicyEngineConfig.workers,
        timeout: float = PolicyEngineConfig.evaluation_timeout,
        max_memory_mib: int = PolicyEngineConfig.max_worker_memory_mib,
        result_cache_entries: int = PolicyEngineConfig.result_cache_entries,
    ) -> None:
        self.timeout = timeout
        self.max_memory_mib = max_memory_mib
        self._paths: BoundedLru[str, tuple[InputPaths | None]] = BoundedLru(PLAN_CACHE_SIZE)
        self._deterministic: BoundedLru[str, bool] = BoundedLru(PLAN_CACHE_SIZE)
        self._results: BoundedLru[bytes, str] | None = BoundedLru(result_cache_entries) if result_cache_entries else None
        #: Evaluations answered from the result cache, since start.
        self.result_hits = 0
        self._size = workers
        self._idle = _IdleWorkers()
        self._all: set[_Worker] = set()
        self._dying: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Workers killed (time limit) or lost, and policies compiled by workers, since start.
        self.replaced = 0
        self.compilations = 0
        #: Called after either count changes (metrics gauges).
        self.on_count: Callable[[], None] = _nothing

    @property
    def closed(self) -> bool:
        return self._closed

    @classmethod
    def from_config(cls, config: PolicyEngineConfig) -> RegoPool:
        return cls(workers=config.workers, timeout=config.evaluation_timeout, max_memory_mib=config.max_worker_memory_mib,
                   result_cache_entries=config.result_cache_entries)

    async def start(self) -> None:
        workers = await asyncio.gather(*(_Worker.start() for _ in range(self._size)))
        for worker in workers:
            self._all.add(worker)
            self._idle.put(worker)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.kill() for w in [*self._all, *self._dying]))
        self._all.clear()
        self._dying.clear()

    async def __aenter__(self) -> RegoPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def compile_timeout(self) -> float:
        return max(MIN_COMPILE_TIMEOUT_SECONDS, self.timeout)

    async def compile(self, spec: PolicySpec) -> None:
        """Compile in a worker; `InvalidPolicyError` with the engine's reason if it does not.

        A policy whose compilation kills the worker (rego-cpp aborts on some
        constructs) is refused the same way: it would do so every time.
        """
        crashed = InvalidPolicyError("policy does not compile: it made the policy engine abort")
        await self._run(lambda w: self._load(w, spec), crashed=crashed)

    async def evaluate(self, spec: PolicySpec, input_: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The rules' values (an undefined rule is absent); raises what `RegoPolicy.evaluate` raises."""
        input_ = trim_input(input_, self._input_paths(spec))
        data = data or {}
        key = self._result_key(spec, input_, data)
        if key is not None and self._results is not None and (cached := self._results.get(key)) is not None:
            self.result_hits += 1
            hit: dict[str, Any] = json.loads(cached)
            return hit
        request = {"op": "eval", "digest": spec.digest, "input": input_, "data": data}

        async def run(worker: _Worker) -> dict[str, Any]:
            reply = await self._call(worker, request, self.timeout, "evaluation")
            if not reply.get("ok") and reply.get("variant") == "missing":
                await self._load(worker, spec)
                reply = await self._call(worker, request, self.timeout, "evaluation")
            result = _unwrap(reply).get("result")
            if not isinstance(result, dict):
                raise InternalError("policy worker returned no result")
            return result

        result: dict[str, Any] = await self._run(run)
        key = key or self._result_key(spec, input_, data)  # the first evaluation learns whether the policy is deterministic
        if key is not None and self._results is not None:
            text = json.dumps(result)
            if len(text) <= MAX_CACHED_RESULT_BYTES:
                self._results.put(key, text)
        return result

    def _input_paths(self, spec: PolicySpec) -> InputPaths | None:
        found = self._paths.get(spec.digest)
        if found is None:
            found = (input_paths((spec.text, *spec.helpers)),)
            self._paths.put(spec.digest, found)
        return found[0]

    def _result_key(self, spec: PolicySpec, input_: Any, data: dict[str, Any]) -> bytes | None:
        """The cache key, or None: no cache, a policy not (yet) known deterministic, or too large a key."""
        if self._results is None or self._deterministic.get(spec.digest) is not True:
            return None
        try:
            material = json.dumps([spec.digest, input_, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            return None  # not JSON (the worker request would fail the same way)
        if len(material) > MAX_CACHE_KEY_BYTES:
            return None
        return hashlib.sha256(material.encode("utf-8", "surrogatepass")).digest()

    async def stats(self) -> list[dict[str, Any]]:
        """Per idle worker: how many policies it holds compiled (`compiled`) and their size (`bytes`)."""
        found = []
        for _ in range(self._size):
            found.append(await self._run(lambda w: self._call(w, {"op": "stats"}, self.timeout, "statistics")))
        return found

    async def _load(self, worker: _Worker, spec: PolicySpec) -> None:
        reply = _unwrap(await self._call(worker, {"op": "load", "spec": spec.to_json()}, self.compile_timeout, "compilation"))
        self._deterministic.put(spec.digest, reply.get("deterministic") is True)
        if reply.get("compiled"):
            self.compilations += 1
            self.on_count()

    async def _run(self, job: Any, *, crashed: TrusteeError | None = None) -> Any:
        if self._closed:
            raise PolicyEngineUnavailableError("policy engine is shut down")
        worker = await self._take()
        try:
            result = await job(worker)
        except _OverrunError as overrun:
            logger.warning("%s: worker killed and replaced", overrun.detail)
            self._replace(worker)
            raise PolicyEngineUnavailableError(overrun.detail) from None
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError):
            logger.warning("policy worker failed: replaced", exc_info=True)
            self._replace(worker)
            raise (crashed or PolicyEngineUnavailableError("policy engine worker failed")) from None
        except BaseException:
            self._replace(worker)  # cancelled mid-call: the pipe may hold a half-read reply
            raise
        self._idle.put(worker)
        return result

    async def _take(self) -> _Worker:
        wait = self.timeout + WORKER_WAIT_GRACE_SECONDS
        worker = await self._idle.take(wait)
        if worker is None:
            raise PolicyEngineUnavailableError(f"policy engine busy: no worker free within {wait:g} s")
        return worker

    def _replace(self, worker: _Worker) -> None:
        self._all.discard(worker)
        self._dying.add(worker)
        worker.signal_kill()
        self.replaced += 1
        self.on_count()
        task = asyncio.create_task(self._restart(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, old: _Worker) -> None:
        await old.kill()
        self._dying.discard(old)
        while not self._closed:
            try:
                worker = await _Worker.start()
            except Exception as exc:  # e.g. the worker got the process group's SIGTERM at shutdown
                if self.closed:
                    return
                logger.warning("starting a policy worker failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if self.closed:  # closed while this worker was starting
                await worker.kill()
                return
            self._all.add(worker)
            self._idle.put(worker)
            return


    async def _call(self, worker: _Worker, request: dict[str, Any], limit: float, what: str) -> dict[str, Any]:
        """One request to `worker`, bounded in time and in the worker's resident memory.

        A timer checks both every `MEMORY_POLL_SECONDS` while the call runs
        (a typical evaluation answers before the first check) and fails the
        reply with `_OverrunError` once either is exceeded.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        reply = worker.send(request)
        timer: asyncio.TimerHandle | None = None

        def watch() -> None:
            nonlocal timer
            if reply.done():
                return
            now = loop.time()
            if now >= deadline:
                reply.set_exception(_OverrunError(f"policy {what} exceeded the {limit:g} s limit"))
            elif worker.rss_bytes() > self.max_memory_mib << 20:
                reply.set_exception(_OverrunError(f"policy {what} exceeded the {self.max_memory_mib} MiB memory limit"))
            else:
                timer = loop.call_later(min(MEMORY_POLL_SECONDS, deadline - now), watch)

        timer = loop.call_later(min(MEMORY_POLL_SECONDS, limit), watch)
        try:
            return await reply
        finally:
            if timer is not None:
                timer.cancel()


def _worker_environment() -> dict[str, str]:
    """Only what starting Python needs; the worker empties even this before running any policy."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for name in _PASSED_TO_WORKERS:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


_PASSED_TO_WORKERS = ("PYTHONHOME", "LD_LIBRARY_PATH")


class _OverrunError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _unwrap(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply
    raise error_from_variant(str(reply.get("variant")), str(reply.get("detail")))
