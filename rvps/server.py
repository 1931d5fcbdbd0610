"""gRPC adapter: `reference.ReferenceValueProviderService` and the server lifecycle.

`ReferenceValueServicer` only translates protobuf to a
`ReferenceValueProvider` call and back; the RVPS serves its store-backed
service with it and the Attestation Service serves a remote client with it
(the RVPS proxy). `run_until_signal` starts a `grpc.aio` server with the
health service, logs one line with the address, and on SIGTERM/SIGINT stops
it gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from rvps.core.record import format_time, value_json
from rvps.ports import ReferenceValueProvider
from trustee_common.errors import ConfigError
from trustee_common.grpc_errors import rpc_errors
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "reference.ReferenceValueProviderService"
GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
Ctx = grpc.aio.ServicerContext[Any, Any]


class ReferenceValueServicer(reference_pb2_grpc.ReferenceValueProviderServiceServicer):
    def __init__(self, provider: ReferenceValueProvider) -> None:
        self._provider = provider

    @rpc_errors
    async def RegisterReferenceValue(self, request: pb.ReferenceValueRegisterRequest, context: Ctx) -> pb.ReferenceValueRegisterResponse:  # noqa: N802 (gRPC method name)
        await self._provider.register(request.message)
        return pb.ReferenceValueRegisterResponse()

    @rpc_errors
    async def QueryReferenceValue(self, request: pb.ReferenceValueQueryRequest, context: Ctx) -> pb.ReferenceValueQueryResponse:  # noqa: N802 (gRPC method name)
        value = await self._provider.query(request.reference_value_id)
        return pb.ReferenceValueQueryResponse() if value is None else pb.ReferenceValueQueryResponse(reference_value_results=value)

    @rpc_errors
    async def DeleteReferenceValue(self, request: pb.ReferenceValueDeleteRequest, context: Ctx) -> pb.ReferenceValueDeleteResponse:  # noqa: N802 (gRPC method name)
        return pb.ReferenceValueDeleteResponse(deleted=await self._provider.delete(request.reference_value_id))

    @rpc_errors
    async def ListReferenceValues(self, request: pb.ReferenceValueListRequest, context: Ctx) -> pb.ReferenceValueListResponse:  # noqa: N802 (gRPC method name)
        records = [
            pb.ReferenceValueRecord(name=r.name, value=value_json(r.value), expiration=format_time(r.expiration))
            for r in await self._provider.list()
        ]
        return pb.ReferenceValueListResponse(reference_values=records)


def new_server() -> grpc.aio.Server:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)]
    return grpc.aio.server(options=options)


async def run_until_signal(
    server: grpc.aio.Server, address: str, name: str, services: Sequence[str], on_stop: Callable[[], Awaitable[None]]
) -> None:
    """Serve on `address` with `grpc.health.v1` SERVING until SIGTERM/SIGINT, then stop gracefully.

    `on_stop` runs in every case (also when the port cannot be bound).
    """
    try:
        await _serve(server, address, name, services)
    finally:
        await on_stop()


async def _serve(server: grpc.aio.Server, address: str, name: str, services: Sequence[str]) -> None:
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    for service in ("", *services):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("%s listening on %s", name, address)
    await stop.wait()
    logger.info("%s stopping", name)
    await health.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
