"""gRPC adapter for `AttestationServicePort`: the AS and its RVPS proxy over a few channels.

Calls take `AS_CHANNELS` channels in turn, each with a TCP connection of its
own (a local subchannel pool): an AS running several workers on one port
(`grpc-as --workers`) gets its connections, and so its calls, spread over
its workers by the kernel; one HTTP/2 connection would keep them all on one.

Every call carries the current request id in the `x-request-id` metadata.
Translates `EvidenceItem`s to `attestation.IndividualAttestationRequest`
and gRPC failures to `TrusteeError`s: our AS names its error class in the
`trustee-error-variant` trailer; an upstream AS answers every rejection with
a bare status (ABORTED), which is read as a rejection of the request
(attestation, policy or reference value), while an unreachable AS is
`UpstreamError` (503).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc

from kbs.core.evidence import EvidenceItem
from trustee_common.addresses import grpc_endpoint
from trustee_common.errors import (
    AttestationError,
    InvalidPolicyError,
    InvalidReferenceValueError,
    PayloadTooLargeError,
    TrusteeError,
    UpstreamError,
)
from trustee_common.grpc_errors import error_from_rpc
from trustee_common.grpc_tls import client_channel
from trustee_common.requestid import outgoing_metadata
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS, MAX_MESSAGE_BYTES
from trustee_common.tls_config import ClientTls
from trustee_pb import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

logger = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 120.0
#: The epoch is asked for on the resource path: a dead AS must not hold requests for long.
EPOCH_TIMEOUT_SECONDS = 5.0
#: Room for the protobuf framing around a registration message within MAX_MESSAGE_BYTES.
_FRAMING_BYTES = 64
_TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)

#: Channels (TCP connections) to the AS per KBS process.
AS_CHANNELS = 4

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _to_pb(item: EvidenceItem) -> attestation_pb2.IndividualAttestationRequest:
    request = attestation_pb2.IndividualAttestationRequest(
        tee=item.tee,
        evidence=item.evidence,
        structured_runtime_data=item.structured_runtime_data,
        runtime_data_hash_algorithm=item.runtime_data_hash_algorithm,
    )
    if item.init_data_toml is not None:
        request.init_data_toml = item.init_data_toml
    return request


class GrpcAttestationService:
    """Create inside the running event loop (grpc.aio channels bind to it)."""

    def __init__(self, as_addr: str, *, tls: ClientTls | None = None, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        """`https://` as_addr: TLS with `tls`'s CA (else system roots) and client certificate, if any."""
        endpoint = grpc_endpoint(as_addr, "attestation_service.as_addr")
        options = (*CLIENT_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))
        self._channels = [client_channel(endpoint, tls, "attestation_service", options) for _ in range(AS_CHANNELS)]
        self._stubs: Iterator[tuple[Any, Any]] = itertools.cycle(
            [(attestation_pb2_grpc.AttestationServiceStub(c), reference_pb2_grpc.ReferenceValueProviderServiceStub(c))
             for c in self._channels]
        )
        self._timeout = timeout

    @property
    def _as(self) -> Any:  # the generated stubs are typed for the synchronous API
        return next(self._stubs)[0]

    @property
    def _rv(self) -> Any:
        return next(self._stubs)[1]

    async def _call(
        self, method: Callable[..., Awaitable[Resp]], request: Req, rejection: type[TrusteeError], deadline: float | None = None
    ) -> Resp:
        try:
            return await method(request, timeout=self._timeout if deadline is None else deadline,
                                metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, "attestation service")
            if type(error) is UpstreamError and exc.code() not in _TRANSPORT_CODES:
                error = rejection(exc.details() or "request rejected by the attestation service")
            logger.info("attestation service call failed: %s: %s", error.variant, error.detail)
            raise error from None

    async def evaluate(self, items: list[EvidenceItem], policy_ids: list[str]) -> str:
        request = attestation_pb2.AttestationRequest(verification_requests=[_to_pb(i) for i in items], policy_ids=policy_ids)
        response = await self._call(self._as.AttestationEvaluate, request, AttestationError)
        if not response.attestation_token:
            raise UpstreamError("attestation service returned no token")
        return str(response.attestation_token)

    async def set_policy(self, policy_id: str, policy_b64url: str) -> None:
        request = attestation_pb2.SetPolicyRequest(policy_id=policy_id, policy=policy_b64url)
        await self._call(self._as.SetAttestationPolicy, request, InvalidPolicyError)

    async def register_reference_value(self, message: str) -> None:
        size = len(message.encode())
        if size > MAX_MESSAGE_BYTES - _FRAMING_BYTES:
            raise PayloadTooLargeError(
                f"reference value message is {size} bytes, above the {MAX_MESSAGE_BYTES - _FRAMING_BYTES}-byte limit "
                "of a gRPC message to the attestation service; register the values in smaller messages"
            )
        request = reference_pb2.ReferenceValueRegisterRequest(message=message)
        await self._call(self._rv.RegisterReferenceValue, request, InvalidReferenceValueError)

    async def query_reference_value(self, reference_value_id: str) -> str | None:
        request = reference_pb2.ReferenceValueQueryRequest(reference_value_id=reference_value_id)
        response = await self._call(self._rv.QueryReferenceValue, request, InvalidReferenceValueError)
        if not response.HasField("reference_value_results"):
            return None
        return str(response.reference_value_results)

    async def appraisal_epoch(self) -> str:
        request = attestation_pb2.GetAppraisalEpochRequest()
        response = await self._call(self._as.GetAppraisalEpoch, request, UpstreamError, min(self._timeout, EPOCH_TIMEOUT_SECONDS))
        return str(response.epoch)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
