"""The `external` plugin: a gateway to plugin processes serving `kbs.plugin.v1.KbsPlugin` (proto/plugin.proto).

As upstream, one `[[plugins]] name = "external"` entry lists `backends`;
`/kbs/v0/external/<backend>/<rest...>` goes to the backend named
`<backend>` with `path = [rest...]`. Per request the backend answers
`ValidateAuth` (admin credential, or attestation token + resource policy,
both enforced by the KBS) and, for token-gated requests after `Handle`,
`NeedsEncryption` (JWE to the TEE key). The policy sees
`data.plugin = "external"` and `data["resource-path"] = [<backend>, rest...]`.

At start the KBS connects to every backend and refuses to start when one
does not answer within its `timeout_ms` (10 s when unset); each call is
bounded by the same time. At request time a backend that cannot be reached
or times out is 503 `UpstreamUnavailable` naming it; another gRPC failure,
or a `Handle` reply whose `status_code` is neither 0 nor 2xx, is 401
`PluginInternalError` (upstream's error); an unknown backend name is 404
`PluginNotFound`. Metrics per backend (`plugin_name`): Handle calls and
their duration, and failed gRPC calls (any of the three RPCs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from kbs.config import DEFAULT_PLUGIN_TIMEOUT_MS, ExternalBackendConfig, ExternalPluginConfig
from kbs.metrics import KbsMetrics
from kbs.plugins.base import PluginRequest
from trustee_common.addresses import GrpcEndpoint
from trustee_common.errors import ConfigError, PluginInternalError, PluginNotFoundError, UpstreamError, clip
from trustee_common.grpc_tls import client_channel
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS
from trustee_common.tls_config import ClientTls
from trustee_pb import plugin_pb2, plugin_pb2_grpc

logger = logging.getLogger(__name__)

NAME = "external"
#: gRPC codes that mean the backend is down or too slow (503), not that it refused the request.
UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: How much of a failing `Handle` body the error detail quotes.
DETAIL_BODY_CHARS = 200


@dataclass
class Backend:
    name: str
    endpoint: str
    timeout: float
    channel: grpc.aio.Channel
    stub: Any  # the generated stubs are typed for the synchronous API


async def connect(config: ExternalBackendConfig) -> Backend:
    """A channel to one backend, ready, or `ConfigError` naming it (unreachable, bad CA file, TLS refused)."""
    where = f"plugins.external backend {config.name!r}"
    tls = ClientTls(ca_certificate=config.ca_cert_path)
    channel = client_channel(GrpcEndpoint(config.target, config.tls), tls, where, CLIENT_CHANNEL_OPTIONS)
    timeout = (config.timeout_ms or DEFAULT_PLUGIN_TIMEOUT_MS) / 1000
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout)
    except TimeoutError:
        await channel.close()
        raise ConfigError(f"{where} at {config.endpoint} is unreachable (no connection within {timeout:g} s)") from None
    if not config.tls:
        logger.warning("external plugin backend %r at %s: plaintext gRPC (no TLS), for development only", config.name, config.endpoint)
    logger.info("external plugin backend %r connected at %s", config.name, config.endpoint)
    return Backend(config.name, config.endpoint, timeout, channel, plugin_pb2_grpc.KbsPluginStub(channel))


class ExternalPlugin:
    name = NAME

    def __init__(self, backends: dict[str, Backend], metrics: KbsMetrics) -> None:
        self._backends = backends
        self._metrics = metrics

    @classmethod
    async def open(cls, config: ExternalPluginConfig, metrics: KbsMetrics) -> ExternalPlugin:
        backends: dict[str, Backend] = {}
        try:
            for backend in config.backends:
                backends[backend.name] = await connect(backend)
        except BaseException:
            for opened in backends.values():
                await opened.channel.close()
            raise
        return cls(backends, metrics)

    def _route(self, request: PluginRequest) -> tuple[Backend, list[str]]:
        if not request.path:
            raise PluginNotFoundError("Plugin external: the backend name is missing (/kbs/v0/external/<backend>/...)")
        backend = self._backends.get(request.path[0])
        if backend is None:
            raise PluginNotFoundError(f"Plugin external/{clip(request.path[0])} not found")
        return backend, list(request.path[1:])

    async def _call(self, backend: Backend, rpc: str, message: Any) -> Any:
        try:
            return await getattr(backend.stub, rpc)(message, timeout=backend.timeout)
        except grpc.aio.AioRpcError as exc:
            self._metrics.plugin_errors.labels(backend.name).inc()
            code = exc.code()
            logger.warning("external plugin backend %r: %s failed: %s %s", backend.name, rpc, code.name, clip(exc.details() or ""))
            if code in UNAVAILABLE_CODES:
                raise UpstreamError(f"external plugin backend {backend.name!r} is unavailable ({code.name})") from None
            raise PluginInternalError(f"external plugin backend {backend.name!r}: {rpc} failed ({code.name})") from None

    async def validate_auth(self, request: PluginRequest) -> bool:
        backend, path = self._route(request)
        message = plugin_pb2.ValidateAuthRequest(body=request.body, query=request.query, path=path, method=request.method)
        return bool((await self._call(backend, "ValidateAuth", message)).requires_admin_auth)

    async def encrypted(self, request: PluginRequest) -> bool:
        backend, path = self._route(request)
        message = plugin_pb2.NeedsEncryptionRequest(body=request.body, query=request.query, path=path, method=request.method)
        return bool((await self._call(backend, "NeedsEncryption", message)).requires_payload_encryption)

    async def handle(self, request: PluginRequest, init_data: Any = None) -> bytes:
        backend, path = self._route(request)
        message = plugin_pb2.PluginRequest(body=request.body, query=request.query, path=path, method=request.method)
        self._metrics.plugin_requests.labels(backend.name).inc()
        started = time.monotonic()
        try:
            response = await self._call(backend, "Handle", message)
        finally:
            self._metrics.plugin_duration.labels(backend.name).observe(time.monotonic() - started)
        status = int(response.status_code)
        if status != 0 and not 200 <= status <= 299:
            text = bytes(response.body)[:DETAIL_BODY_CHARS].decode("utf-8", "replace")
            raise PluginInternalError(f"external plugin backend {backend.name!r} returned HTTP status {status}: {text}")
        return bytes(response.body)

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.channel.close()
