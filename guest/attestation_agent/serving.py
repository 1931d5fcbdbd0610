"""Plumbing shared by the three guest servers (AA, CDH, REST) and their gRPC clients.

The `[log] level` mapping and the translation of failed gRPC calls into
`TrusteeError`s (addresses and the server lifecycle are in
`trustee_common.addresses` and `trustee_common.serving`). It
holds no protocol logic. It lives in the AA package because the CDH and the
REST server are both AA clients.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from pathlib import Path
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


KERNEL_CMDLINE = Path("/proc/cmdline")


def read_kbc_params() -> tuple[str | None, str | None]:
    """Where `aa_kbc_params` comes from without a config file: (`AA_KBC_PARAMS`, kernel command line)."""
    env = os.environ.get("AA_KBC_PARAMS")
    if env is not None:
        return env, None
    try:
        return None, KERNEL_CMDLINE.read_text()
    except OSError:
        return None, None


class ServiceUnreachableError(UpstreamError):
    """A guest-local service (AA or CDH) did not answer at all."""

    variant = "ServiceUnreachable"


def apply_log_level(level: str | None) -> None:
    """Set the root level from `[log] level` unless `TRUSTEE_LOGLEVEL` overrides it."""
    if level is None:
        return
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log.level: unknown level {level!r} (one of {', '.join(LOG_LEVELS)})")
    if not os.environ.get("TRUSTEE_LOGLEVEL"):
        logging.getLogger().setLevel(LOG_LEVELS[level.lower()])


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
