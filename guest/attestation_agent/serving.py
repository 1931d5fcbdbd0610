"""Plumbing shared by the three guest servers (AA, CDH, REST) and their gRPC clients.

Listen-address parsing, the `[log] level` mapping, running until SIGTERM or
SIGINT, and the translation of failed gRPC calls into `TrusteeError`s. It
holds no protocol logic. It lives in the AA package because the CDH and the
REST server are both AA clients.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from trustee_common.errors import ConfigError, TrusteeError, UpstreamError
from trustee_common.grpc_errors import VARIANT_TRAILER, error_from_rpc

logger = logging.getLogger(__name__)

#: Upstream's Rust log levels (RUST_LOG names) and ours.
LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}

#: Seconds the servers give in-flight calls on shutdown.
SHUTDOWN_GRACE = 2.0


class ServiceUnreachableError(UpstreamError):
    """A guest-local service (AA or CDH) did not answer at all."""

    variant = "ServiceUnreachable"


def parse_listen_address(text: str, field: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises `ConfigError` naming `field`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{field}: {text!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{field}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{field}: {host!r} is not an IPv6 address") from None
        return host[1:-1], port
    if ":" in host or any(c.isspace() for c in host):
        raise ConfigError(f"{field}: {text!r} is not host:port (write IPv6 hosts as [addr]:port)")
    return host, port


def grpc_target(text: str, field: str) -> str:
    """A gRPC client target: `host:port` (validated) or `unix:<path>` passed through."""
    if text.startswith("unix:"):
        return text
    host, port = parse_listen_address(text, field)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def apply_log_level(level: str | None) -> None:
    """Set the root level from `[log] level` unless `TRUSTEE_LOGLEVEL` overrides it."""
    if level is None:
        return
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log.level: unknown level {level!r} (one of {', '.join(LOG_LEVELS)})")
    if not os.environ.get("TRUSTEE_LOGLEVEL"):
        logging.getLogger().setLevel(LOG_LEVELS[level.lower()])


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stop signal received, shutting down")


def new_grpc_server() -> grpc.aio.Server:
    """A grpc.aio server that refuses a port another process already holds."""
    return grpc.aio.server(options=[("grpc.so_reuseport", 0)])


async def serve_grpc(make_server: Callable[[], grpc.aio.Server], address: str, name: str) -> None:
    """Build the server in the running loop, bind `address`, and stop gracefully on SIGTERM/SIGINT."""
    host, port = parse_listen_address(address, "listen address")
    server = make_server()
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise ConfigError(f"{name} cannot listen on {bind}: {exc}") from exc
    await server.start()
    logger.info("%s listening on %s (gRPC)", name, bind)
    try:
        await wait_for_stop_signal()
    finally:
        await server.stop(SHUTDOWN_GRACE)
        logger.info("%s stopped", name)


T = TypeVar("T")


async def call_rpc(call: Awaitable[T], service: str, target: str) -> T:
    """Await one gRPC call; failures become the `TrusteeError` the peer raised.

    A peer that cannot be reached at all (UNAVAILABLE without our variant
    trailer) gives `ServiceUnreachableError`, so callers can tell "the AA is
    down" from "the AA says the KBS is down".
    """
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise rpc_failure(exc, service, target) from None


def rpc_failure(exc: grpc.aio.AioRpcError, service: str, target: str) -> TrusteeError:
    trailers = exc.trailing_metadata() or ()
    has_variant = any(key == VARIANT_TRAILER for key, _ in trailers)
    if not has_variant and exc.code() == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnreachableError(f"{service} at {target} is unreachable")
    if not has_variant and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnreachableError(f"{service} at {target} did not answer in time")
    return error_from_rpc(exc, service)
