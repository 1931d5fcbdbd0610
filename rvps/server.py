"""gRPC adapter: `reference.ReferenceValueProviderService` and the server lifecycle.

`ReferenceValueServicer` only translates protobuf to a
`ReferenceValueProvider` call and back; the RVPS serves its store-backed
service with it and the Attestation Service serves a remote client with it
(the RVPS proxy). The server lifecycle is `trustee_common.serving`.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from rvps.core.record import format_time, value_json
from rvps.metrics import RvpsMetrics
from rvps.ports import ReferenceValueProvider
from trustee_common.audit import AuditSink
from trustee_common.audit_events import digest
from trustee_common.errors import TrusteeError
from trustee_common.grpc_audit import audited_change
from trustee_common.grpc_errors import rpc_errors
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "reference.ReferenceValueProviderService"
Ctx = grpc.aio.ServicerContext[Any, Any]


class ReferenceValueServicer(reference_pb2_grpc.ReferenceValueProviderServiceServicer):
    """`metrics`: count registrations and queries (the RVPS itself; the AS's proxy passes None).

    `audit`: where registrations and deletions are audited (the RVPS's `[audit]`, or the AS's
    when it serves its built-in provider; a proxy to a remote RVPS leaves that to the RVPS).
    """

    def __init__(self, provider: ReferenceValueProvider, metrics: RvpsMetrics | None = None, audit: AuditSink | None = None) -> None:
        self._provider = provider
        self._metrics = metrics
        self._audit = audit or AuditSink()

    def _count(self, counter: str, result: str) -> None:
        if self._metrics is not None:
            getattr(self._metrics, counter).labels(result).inc()

    @rpc_errors
    async def RegisterReferenceValue(self, request: pb.ReferenceValueRegisterRequest, context: Ctx) -> pb.ReferenceValueRegisterResponse:  # noqa: N802 (gRPC method name)
        content = digest(request.message.encode())
        try:
            await audited_change(self._audit, context, "reference_value.register", {}, content,
                                 lambda: self._provider.register(request.message))
        except TrusteeError as exc:
            self._count("registrations", exc.variant)
            raise
        self._count("registrations", "ok")
        return pb.ReferenceValueRegisterResponse()

    @rpc_errors
    async def QueryReferenceValue(self, request: pb.ReferenceValueQueryRequest, context: Ctx) -> pb.ReferenceValueQueryResponse:  # noqa: N802 (gRPC method name)
        try:
            value = await self._provider.query(request.reference_value_id)
        except TrusteeError as exc:
            self._count("queries", exc.variant)
            raise
        self._count("queries", "absent" if value is None else "found")
        return pb.ReferenceValueQueryResponse() if value is None else pb.ReferenceValueQueryResponse(reference_value_results=value)

    @rpc_errors
    async def DeleteReferenceValue(self, request: pb.ReferenceValueDeleteRequest, context: Ctx) -> pb.ReferenceValueDeleteResponse:  # noqa: N802 (gRPC method name)
        deleted = await audited_change(self._audit, context, "reference_value.delete", {"reference_value_id": request.reference_value_id},
                                       None, lambda: self._provider.delete(request.reference_value_id))
        return pb.ReferenceValueDeleteResponse(deleted=deleted)

    @rpc_errors
    async def ListReferenceValues(self, request: pb.ReferenceValueListRequest, context: Ctx) -> pb.ReferenceValueListResponse:  # noqa: N802 (gRPC method name)
        records = [
            pb.ReferenceValueRecord(name=r.name, value=value_json(r.value), expiration=format_time(r.expiration))
            for r in await self._provider.list(list(request.names) or None)
        ]
        return pb.ReferenceValueListResponse(reference_values=records)

    @rpc_errors
    async def GetReferenceValueEpoch(self, request: pb.ReferenceValueEpochRequest, context: Ctx) -> pb.ReferenceValueEpochResponse:  # noqa: N802 (gRPC method name)
        return pb.ReferenceValueEpochResponse(epoch=await self._provider.epoch())
