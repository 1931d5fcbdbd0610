"""HTTP listener hardening shared by every aiohttp server (adapter).

aiohttp has no header-read timeout and no connection cap, so a client that
opens many connections and never finishes its request headers holds a file
descriptor each until the keep-alive timer fires. `serve_bounded` puts a
thin protocol in front of aiohttp's request handler that:

- closes a connection whose first request headers are not complete within
  `header_read_timeout` seconds of the connection being accepted (over TLS,
  the handshake gets the same bound before that; later
  requests on a kept-alive connection are bounded by `keep_alive_timeout`:
  aiohttp closes a connection still waiting for a complete request then);
- at `max_connections`, makes room for a new connection by closing the
  oldest one that is still sending its first request headers (a client
  that trickles headers cannot starve clients that send whole requests);
  only when every connection is past its headers is the new one refused:
  given `busy` (a whole HTTP response, e.g. the KBS's 503 `ServerBusy` with
  `Retry-After` and `Connection: close`), it is answered with that at once
  and closed once the client has closed its side (at most
  `REFUSAL_LINGER_SECONDS`; reading what the client sends meanwhile, so the
  close never resets the answer away), so a client learns to come back later
  instead of seeing a reset; at most `MAX_REFUSING` such answers are pending
  at once, beyond them (and without `busy`) the connection is closed at once;
- logs per-connection trouble as a rate-limited one-liner, never a traceback;
- when given `malformed` (a function from a short reason to a response),
  answers a request aiohttp's parser refuses (a bad request line, a NUL byte
  or another invalid character in a header) with that response instead of
  aiohttp's plain-text 400, and closes the connection.

The listening sockets are plain `asyncio` servers over the runner's public
request-handler factory, so the aiohttp runner still owns shutdown. In a
worker of a multi-process server (`trustee_common.workers`) they are opened
with SO_REUSEPORT, so the workers share the address; otherwise a port
another process holds is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from trustee_common.workers import in_worker

logger = logging.getLogger(__name__)

HEADER_END = b"\r\n\r\n"
#: Seconds between two log lines about refused or timed-out connections.
LOG_INTERVAL_SECONDS = 10.0
#: Descriptors kept for the process's own use (storage, gRPC, logs), outside client connections.
OWN_DESCRIPTORS = 160
#: The listen backlog: connections the kernel completes and holds while the event loop is busy. Above it the
#: kernel drops new SYNs and the client retries only after a second (then three), so a short stall of the loop
#: under a burst would turn into seconds of waiting. asyncio accepts up to the backlog in one go, so that many
#: descriptors are kept spare for a burst of accepted sockets not yet refused (`fit_fd_limit`).
LISTEN_BACKLOG = 1024
#: The smallest backlog when descriptors are short (asyncio's default).
MIN_BACKLOG = 100
#: Connections refused with the `busy` answer that may wait at once for their client to close (within the burst's descriptors).
MAX_REFUSING = 64
#: How long a connection refused with the `busy` answer waits for its client to close before it is closed.
REFUSAL_LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_read_timeout: float = 10.0
    keep_alive_timeout: float = 15.0
    max_connections: int = 1024


class _RateLimitedLog:
    """At most one line per `LOG_INTERVAL_SECONDS`, with the count of suppressed events."""

    def __init__(self) -> None:
        self._last = 0.0
        self._suppressed = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < LOG_INTERVAL_SECONDS:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        self._last = now
        logger.warning("%s%s", message, extra)


class _OneLineFilter(logging.Filter):
    """aiohttp logs every malformed request with a traceback: keep one rate-limited line instead."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < LOG_INTERVAL_SECONDS:
            self._suppressed += 1
            return False
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            summary = " ".join(str(exc).split())[:200]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {summary}"
            record.args = None
        if self._suppressed:
            record.msg = f"{record.getMessage()} ({self._suppressed} more since the last report)"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._last, self._suppressed = now, 0
        return True


#: The logger aiohttp's request handler reports connection-level errors to.
CONNECTION_LOGGER = logging.getLogger("trustee_common.http_serving.connections")
CONNECTION_LOGGER.addFilter(_OneLineFilter())


def runner_options(limits: ConnectionLimits) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` that go with `serve_bounded`."""
    return {"keepalive_timeout": limits.keep_alive_timeout, "logger": CONNECTION_LOGGER}


class _Gate:
    """Connection accounting shared by every protocol of one listener set."""

    def __init__(self, limits: ConnectionLimits, cap: int, busy: bytes | None = None) -> None:
        self.limits = limits
        self.cap = cap
        self.busy = busy
        self.active = 0
        #: Connections answered with `busy`, waiting for their client to close.
        self.refusing = 0
        #: Connections still inside their header deadline, oldest first (eviction candidates at the cap).
        self.pending: dict[_BoundedProtocol, None] = {}
        self.report = _RateLimitedLog()
        self.report_eviction = _RateLimitedLog()

    def make_room(self) -> bool:
        """At the cap: close the oldest connection still sending headers; False when there is none."""
        victim = next(iter(self.pending), None)
        if victim is None:
            return False
        self.report_eviction(f"at max_connections ({self.cap}): closing the oldest connection still sending its request headers")
        victim.evict()
        return True


#: Builds the response to a request aiohttp's parser refused, from a short reason.
MalformedResponder = Callable[[str], web.StreamResponse]


def _handler_class(malformed: MalformedResponder) -> type[RequestHandler]:
    """aiohttp's request handler, answering parser-level client errors with `malformed(reason)`.

    aiohttp builds its plain-text 400 in `RequestHandler.handle_error`; the
    subclass adds no state (`__slots__ = ()`), so an instance made by
    aiohttp's `Server` can take it as its class."""

    class Handler(RequestHandler):
        __slots__ = ()

        def handle_error(
            self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
        ) -> web.StreamResponse:
            if not 400 <= status < 500 or request.writer.output_size > 0:
                return super().handle_error(request, status, exc, message)
            reason = type(exc).__name__ if exc is not None else str(status)
            self.logger.warning("malformed HTTP request from %s: %s", request.remote, reason)
            response = malformed(f"malformed HTTP request ({reason})")
            response.force_close()
            return response

    return Handler


class _BoundedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's `RequestHandler`; enforces the header deadline and the cap."""

    def __init__(self, factory: web.Server, gate: _Gate, handler_class: type[RequestHandler] | None = None) -> None:
        self._factory = factory
        self._gate = gate
        self._handler_class = handler_class
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self._evicted = False
        self._refusing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._gate.active >= self._gate.cap and not self._gate.make_room():
            self._gate.report(f"refusing connections above max_connections ({self._gate.cap})")
            if self._gate.busy is not None and self._gate.refusing < MAX_REFUSING:
                self._answer_busy(self._transport, self._gate.busy)
            else:
                self._transport.abort()
            return
        self._gate.active += 1
        self._deadline = asyncio.get_running_loop().call_later(self._gate.limits.header_read_timeout, self._expired)
        self._gate.pending[self] = None
        self._inner = self._factory()
        if self._handler_class is not None and type(self._inner) is RequestHandler:
            self._inner.__class__ = self._handler_class
        self._inner.connection_made(transport)

    def _answer_busy(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Send `answer`, then wait (reading and dropping) for the client to close; abort after the linger time."""
        self._refusing = True
        self._gate.refusing += 1
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.abort)

    def evict(self) -> None:
        """Closed to make room for a newer connection; counts as gone at once (the abort completes later)."""
        self._disarm()
        self._gate.active -= 1
        self._evicted = True
        if self._transport is not None:
            self._transport.abort()

    def _expired(self) -> None:
        self._deadline = None
        self._gate.pending.pop(self, None)
        self._gate.report(f"closing connection(s) whose request headers took longer than {self._gate.limits.header_read_timeout} s")
        if self._transport is not None:
            self._transport.abort()

    def _disarm(self) -> None:
        self._gate.pending.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            window = self._tail + data
            if HEADER_END in window:
                self._disarm()
            else:
                self._tail = window[-(len(HEADER_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else cast(bool | None, self._inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refusing:
            self._refusing = False
            self._gate.refusing -= 1
            self._disarm()
            return
        if self._inner is None:
            return
        self._disarm()
        if not self._evicted:
            self._gate.active -= 1
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def fit_fd_limit(max_connections: int) -> tuple[int, int]:
    """Raise the soft descriptor limit towards the hard one; (connection cap, listen backlog) that fit under it."""
    needed = max_connections + LISTEN_BACKLOG + OWN_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections, LISTEN_BACKLOG
    spare = soft - OWN_DESCRIPTORS
    backlog = min(LISTEN_BACKLOG, max(MIN_BACKLOG, spare - max_connections))
    fitted = max(1, min(max_connections, spare - backlog))
    logger.warning(
        "the open-file limit (%d) cannot hold max_connections = %d and a listen backlog of %d: serving at most %d "
        "connections with a backlog of %d", soft, max_connections, LISTEN_BACKLOG, fitted, backlog
    )
    return fitted, backlog


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Socket errors reported by the event loop (e.g. accept() out of descriptors) become rate-limited one-liners."""
    report = _RateLimitedLog()
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError):
            report(f"{context.get('message', 'socket error')}: {exc.__class__.__name__}: {exc}")
        elif default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


@contextlib.asynccontextmanager
async def serve_bounded(
    runner: web.AppRunner,
    binds: Sequence[tuple[str, int]],
    limits: ConnectionLimits,
    ssl_context: ssl.SSLContext | None = None,
    malformed: MalformedResponder | None = None,
    busy: bytes | None = None,
) -> AsyncIterator[list[asyncio.Server]]:
    """Listen on every `(host, port)` with `limits` until the block exits; `runner` must be set up.

    `busy`: the whole HTTP response a connection above the cap gets (module docstring); None: it is closed at once."""
    factory = runner.server
    assert factory is not None, "runner.setup() first"
    cap, backlog = fit_fd_limit(limits.max_connections)
    gate = _Gate(limits, cap, busy)
    handler_class = None if malformed is None else _handler_class(malformed)
    loop = asyncio.get_running_loop()
    quiet_loop_errors(loop)
    servers: list[asyncio.Server] = []
    try:
        for host, port in binds:
            servers.append(
                await loop.create_server(
                    lambda: _BoundedProtocol(factory, gate, handler_class),
                    host,
                    port,
                    ssl=ssl_context,
                    reuse_port=in_worker() or None,
                    backlog=backlog,
                    # The TLS handshake comes before the protocol sees the connection: bound it the same way.
                    ssl_handshake_timeout=limits.header_read_timeout if ssl_context is not None else None,
                )
            )
        yield servers
    finally:
        for server in servers:
            server.close()
