"""gRPC server lifecycle shared by every gRPC service (adapter).

`serve_grpc` binds a `grpc.aio` server, marks it SERVING in
`grpc.health.v1`, runs until SIGTERM or SIGINT, then enters graceful
shutdown. A port another process holds is refused (no SO_REUSEPORT), except
in a worker of a multi-process server (`trustee_common.workers`), where the
workers share the port with SO_REUSEPORT; `serve_grpc` tells the supervisor
when the port is served.
With `ServerTls` the port serves TLS (mutual TLS with `client_ca`);
`serve_grpc` logs which callers may use the write RPCs (`grpc_tls.WriteGuard`).

Message sizes: every server and every client channel of this project (KBS
-> AS -> RVPS, guest agents, rvps-tool) sends and receives messages of up
to `MAX_MESSAGE_BYTES` (8 MiB), on both sides, so no hop has a smaller
limit than the others. What fills the largest messages is bounded below
it: the RVPS keeps all reference values within `max_total_bytes` (4 MiB
by default, at most `rvps.core.limits.MAX_TOTAL_CEILING`), so a
`ListReferenceValues` reply always fits, and the KBS refuses a larger
reference-value registration before sending it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from trustee_common.addresses import join_host_port, parse_listen_address
from trustee_common.errors import ConfigError
from trustee_common.grpc_observe import ObservingInterceptor, RpcMetrics
from trustee_common.grpc_tls import WriteAccess, WriteGuard, server_credentials
from trustee_common.heap import settle_heap
from trustee_common.tls_config import ServerTls, is_loopback_host
from trustee_common.workers import in_worker, notify_ready

logger = logging.getLogger(__name__)

#: Seconds in-flight calls get on shutdown.
SHUTDOWN_GRACE_SECONDS = 3.0
#: Largest gRPC message (request or reply) any of our servers and clients sends or accepts.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

MESSAGE_SIZE_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

#: Client channel options: the message sizes above, and a restarted peer is found
#: again within ~2 s instead of gRPC's default exponential backoff (up to 120 s).
CLIENT_CHANNEL_OPTIONS = (
    *MESSAGE_SIZE_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def new_grpc_server(*, interceptors: Sequence[Any] = (), metrics: RpcMetrics | None = None) -> grpc.aio.Server:
    """A grpc.aio server bounded in message size, refusing a port already taken (shared by the workers of one server).

    Every call gets a request id and is counted (`trustee_common.grpc_observe`)
    before `interceptors` (e.g. the write guard) run.
    """
    options = [*MESSAGE_SIZE_OPTIONS, ("grpc.so_reuseport", 1 if in_worker() else 0)]
    return grpc.aio.server(options=options, interceptors=[ObservingInterceptor(metrics), *interceptors])


def stop_on_signal() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets; the handlers are installed now, so a signal during start-up is not lost."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def wait_for_stop_signal(stop: asyncio.Event | None = None) -> None:
    """Return when SIGTERM or SIGINT arrives (or has arrived, for an event from `stop_on_signal`)."""
    await (stop or stop_on_signal()).wait()
    logger.info("stop signal received, shutting down")


def _add_port(server: grpc.aio.Server, bind: str, tls: ServerTls | None) -> int:
    if tls is None:
        return server.add_insecure_port(bind)
    return server.add_secure_port(bind, server_credentials(tls, "tls"))


def _describe(tls: ServerTls | None, guard: WriteGuard | None) -> str:
    transport = "plain text" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    if guard is None:
        return transport
    writes = {
        WriteAccess.LOOPBACK: "write calls open to local callers (loopback)",
        WriteAccess.MUTUAL_TLS: "write calls for client-certificate holders",
        WriteAccess.INSECURE: "write calls open to everyone (--insecure-allow-writes)",
        WriteAccess.REFUSED: "write calls refused (non-loopback without mutual TLS)",
    }[guard.access]
    return f"{transport}; {writes}"


async def serve_grpc(
    server: grpc.aio.Server,
    address: str,
    name: str,
    services: Sequence[str] = (),
    *,
    tls: ServerTls | None = None,
    guard: WriteGuard | None = None,
) -> None:
    """Serve `server` on `address` until a stop signal; `services` are reported SERVING."""
    bind = join_host_port(*parse_listen_address(address, "listen address"))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = _add_port(server, bind, tls)
    except RuntimeError as exc:
        raise ConfigError(f"{name} cannot listen on {bind}: {exc}") from None
    if port == 0:
        raise ConfigError(f"{name} cannot listen on {bind}")
    stop = stop_on_signal()  # before the port opens: a SIGTERM right after start-up stops cleanly too
    await server.start()
    for service in ("", *services):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("%s listening on %s (gRPC, %s)", name, bind, _describe(tls, guard))
    settle_heap()
    notify_ready()
    if guard is not None and guard.access is WriteAccess.INSECURE:
        logger.warning("%s: write calls on %s are open to every caller (--insecure-allow-writes)", name, bind)
    if tls is None and not is_loopback_host(parse_listen_address(address, "listen address")[0]):
        logger.warning("%s: plain-text gRPC on the non-loopback address %s: evidence and tokens travel unencrypted "
                       "(configure [tls], docs/grpc-tls.md)", name, bind)
    try:
        await wait_for_stop_signal(stop)
    finally:
        await health.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_SECONDS)
        logger.info("%s stopped", name)
