"""gRPC adapter for the RVPS API (`reference.ReferenceValueProviderService`).

One `RvpsClient` per address; each method is one RPC with a deadline, and
a failed RPC becomes the `TrusteeError` the server raised
(`error_from_rpc`). Protobuf stays inside this module: callers get plain
strings and `ReferenceValue` records. It prints nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from trustee_common.addresses import GrpcEndpoint
from trustee_common.errors import ReferenceValueNotFoundError
from trustee_common.grpc_errors import error_from_rpc
from trustee_common.grpc_tls import client_channel
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS
from trustee_common.tls_config import ClientTls
from trustee_pb import reference_pb2, reference_pb2_grpc

RPC_TIMEOUT_SECONDS = 15.0
SERVICE = "RVPS"


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    name: str
    value: Any
    expiration: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "expiration": self.expiration}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class RvpsClient:
    """Async RVPS client (plain text, or TLS for an https:// endpoint); use as an async context manager."""

    def __init__(self, endpoint: GrpcEndpoint, tls: ClientTls | None = None) -> None:
        self.target = endpoint.target
        self._channel = client_channel(endpoint, tls, "rvps-tool", CLIENT_CHANNEL_OPTIONS)
        self._stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(self._channel)

    async def __aenter__(self) -> RvpsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def register(self, message: str) -> None:
        try:
            request = reference_pb2.ReferenceValueRegisterRequest(message=message)
            await self._stub.RegisterReferenceValue(request, timeout=RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, SERVICE) from None

    async def query(self, rv_id: str) -> str:
        """The stored value's JSON text; `ReferenceValueNotFoundError` when there is none."""
        request = reference_pb2.ReferenceValueQueryRequest(reference_value_id=rv_id)
        try:
            response = await self._stub.QueryReferenceValue(request, timeout=RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, SERVICE) from None
        if not response.HasField("reference_value_results"):
            raise ReferenceValueNotFoundError(f"no reference value named {rv_id!r}")
        return response.reference_value_results

    async def delete(self, rv_id: str) -> None:
        request = reference_pb2.ReferenceValueDeleteRequest(reference_value_id=rv_id)
        try:
            response = await self._stub.DeleteReferenceValue(request, timeout=RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, SERVICE) from None
        if not response.deleted:
            raise ReferenceValueNotFoundError(f"no reference value named {rv_id!r}")

    async def list(self) -> list[ReferenceValue]:
        try:
            response = await self._stub.ListReferenceValues(reference_pb2.ReferenceValueListRequest(), timeout=RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, SERVICE) from None
        records = [ReferenceValue(r.name, _json_or_text(r.value), r.expiration) for r in response.reference_values]
        return sorted(records, key=lambda r: r.name)
