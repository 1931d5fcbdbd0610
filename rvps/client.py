"""`ReferenceValueProvider` over gRPC: a client of a remote RVPS.

Plain text for `host:port` / `http://`, TLS for `https://` (mutual TLS
with a client certificate). Every failed call becomes the `TrusteeError` the RVPS raised (from the
`trustee-error-variant` trailer), or `UpstreamError` when it is unreachable.
Every call carries the current request id (`x-request-id` metadata).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import grpc

from rvps.core.record import ReferenceValue, parse_time
from trustee_common.addresses import grpc_endpoint
from trustee_common.epoch import UNSUPPORTED
from trustee_common.errors import InvalidReferenceValueError, UpstreamError
from trustee_common.grpc_errors import error_from_rpc
from trustee_common.grpc_tls import client_channel
from trustee_common.requestid import outgoing_metadata
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS
from trustee_common.tls_config import ClientTls
from trustee_pb import reference_pb2, reference_pb2_grpc

DEFAULT_TIMEOUT_SECONDS = 10.0


class RemoteReferenceValueProvider:
    def __init__(
        self, address: str, *, tls: ClientTls | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS, where: str = "rvps_config"
    ) -> None:
        """`address` with `https://` uses TLS (`tls`: CA and client certificate files, else system roots).

        `where` names the settings in errors: a config table (`<where>.address`, `<where>.ca_certificate`...).
        """
        self.address = address
        endpoint = grpc_endpoint(address, f"{where}.address")
        self._channel = client_channel(endpoint, tls, where, CLIENT_CHANNEL_OPTIONS)
        self._stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(self._channel)
        self._timeout = timeout

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"RVPS at {self.address}") from None

    async def register(self, message: str) -> None:
        await self._call(self._stub.RegisterReferenceValue, reference_pb2.ReferenceValueRegisterRequest(message=message))

    async def query(self, name: str) -> str | None:
        reply = await self._call(self._stub.QueryReferenceValue, reference_pb2.ReferenceValueQueryRequest(reference_value_id=name))
        return str(reply.reference_value_results) if reply.HasField("reference_value_results") else None

    async def delete(self, name: str) -> bool:
        reply = await self._call(self._stub.DeleteReferenceValue, reference_pb2.ReferenceValueDeleteRequest(reference_value_id=name))
        return bool(reply.deleted)

    async def list(self, names: Collection[str] | None = None) -> list[ReferenceValue]:
        if names is not None and not names:
            return []
        request = reference_pb2.ReferenceValueListRequest(names=sorted(names or ()))
        reply = await self._call(self._stub.ListReferenceValues, request)
        return [_record(r) for r in reply.reference_values]

    async def epoch(self) -> str:
        """The RVPS's epoch; `UNSUPPORTED` for an RVPS without the RPC (upstream's)."""
        try:
            reply = await self._stub.GetReferenceValueEpoch(reference_pb2.ReferenceValueEpochRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return UNSUPPORTED
            raise error_from_rpc(exc, f"RVPS at {self.address}") from None
        return str(reply.epoch)

    async def close(self) -> None:
        await self._channel.close()


def _record(pb: reference_pb2.ReferenceValueRecord) -> ReferenceValue:
    try:
        value = json.loads(pb.value)
        expiration = parse_time(pb.expiration, "expiration")
    except (ValueError, InvalidReferenceValueError) as exc:
        raise UpstreamError(f"RVPS returned a malformed record {pb.name!r}: {exc}") from None
    return ReferenceValue(pb.name, value, expiration)
