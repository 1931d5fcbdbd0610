"""A plain-HTTP `/metrics` endpoint on its own address (adapter), for services whose main port is not HTTP.

Serves only `GET /metrics` (Prometheus text format) from one registry;
every other path is 404. Used by the AS and the RVPS (`[metrics] address`),
and by the KBS when its `/metrics` is moved off the main port. Connections
are bounded like every HTTP server here (`trustee_common.http_serving`:
header read timeout, keep-alive timeout, at most `MAX_CONNECTIONS`).
The address is meant to be loopback or a monitoring network: the
counters hold no secrets, but the endpoint is not authenticated.

`exposition` renders a registry, or, in a worker of a multi-process server
(`PROMETHEUS_MULTIPROC_DIR` set, `trustee_common.workers`), the totals of
every worker from prometheus_client's multiprocess files (the registry then
only says which process's metrics exist; gauges sum or take the maximum as
each declares with `multiprocess_mode`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import cast

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from trustee_common.addresses import join_host_port, parse_listen_address
from trustee_common.errors import ConfigError
from trustee_common.http_serving import ConnectionLimits, runner_options, serve_bounded

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 1.0
#: A scraper needs one or two connections; anything beyond is refused.
LIMITS = ConnectionLimits(max_connections=64)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text of `registry`, or of all workers in multiprocess mode."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return bytes(generate_latest(registry))
    combined = CollectorRegistry()
    collect_all = cast(Callable[..., object], MultiProcessCollector)  # untyped in prometheus_client
    collect_all(combined, path=directory)
    return bytes(generate_latest(combined))


def metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving_metrics(address: str | None, registry: CollectorRegistry, name: str) -> AsyncIterator[None]:
    """Serve `/metrics` on `address` while the block runs; nothing when `address` is None."""
    if address is None:
        yield
        return
    host, port = parse_listen_address(address, "metrics.address")
    host = host.strip("[]")
    runner = web.AppRunner(metrics_app(registry), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS, **runner_options(LIMITS))
    await runner.setup()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        try:
            await stack.enter_async_context(serve_bounded(runner, [(host, port)], LIMITS))
        except OSError as exc:
            raise ConfigError(f"metrics.address: {name} cannot listen on {join_host_port(host, port)}: {exc.strerror}") from None
        logger.info("%s metrics on http://%s/metrics", name, join_host_port(host, port))
        yield
