"""gRPC adapter: `attestation.AttestationService` translated to `AttestationService` calls.

Each method decodes the protobuf fields (base64url policy text, the
request oneofs), calls the service and encodes the reply; every error
goes through `rpc_errors` (status code + `trustee-error-variant`). The RVPS
proxy on the same port is `rvps.server.ReferenceValueServicer` over the
configured provider.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from attestation_service.core.request import VerificationRequest
from attestation_service.service import AttestationService
from trustee_common.audit import AuditSink
from trustee_common.audit_events import digest
from trustee_common.b64 import url_decode_text, url_encode
from trustee_common.errors import MalformedRequestError
from trustee_common.grpc_audit import audited_change
from trustee_common.grpc_errors import rpc_errors
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc

SERVICE_NAME = "attestation.AttestationService"
Ctx = grpc.aio.ServicerContext[Any, Any]
_RUNTIME_KINDS = {"raw_runtime_data": "raw", "structured_runtime_data": "structured"}
_INIT_KINDS = {"init_data_digest": "digest", "init_data_toml": "toml"}


def verification_request(item: pb.IndividualAttestationRequest, index: int) -> VerificationRequest:
    runtime_field = item.WhichOneof("runtime_data")
    init_field = item.WhichOneof("init_data")
    try:
        return VerificationRequest.parse(
            tee=item.tee,
            evidence=item.evidence,
            runtime_data=None if runtime_field is None else (_RUNTIME_KINDS[runtime_field], getattr(item, runtime_field)),
            init_data=None if init_field is None else (_INIT_KINDS[init_field], getattr(item, init_field)),
            hash_algorithm=item.runtime_data_hash_algorithm,
        )
    except MalformedRequestError as exc:
        raise MalformedRequestError(f"verification_requests[{index}]: {exc.detail}") from None


class AttestationServicer(attestation_pb2_grpc.AttestationServiceServicer):
    """Policy writes are audited in `audit` (`[audit]` of the AS config; docs/audit.md)."""

    def __init__(self, service: AttestationService, audit: AuditSink | None = None) -> None:
        self._service = service
        self._audit = audit or AuditSink(service="grpc-as")

    @rpc_errors
    async def AttestationEvaluate(self, request: pb.AttestationRequest, context: Ctx) -> pb.AttestationResponse:  # noqa: N802 (gRPC name)
        requests = [verification_request(item, i) for i, item in enumerate(request.verification_requests)]
        token = await self._service.evaluate(requests, list(request.policy_ids))
        return pb.AttestationResponse(attestation_token=token)

    @rpc_errors
    async def SetAttestationPolicy(self, request: pb.SetPolicyRequest, context: Ctx) -> pb.SetPolicyResponse:  # noqa: N802 (gRPC name)
        text = url_decode_text(request.policy, "policy")
        await audited_change(self._audit, context, "attestation_policy.set", {"policy_id": request.policy_id},
                             digest(text.encode()), lambda: self._service.set_policy(request.policy_id, text))
        return pb.SetPolicyResponse()

    @rpc_errors
    async def GetAttestationChallenge(self, request: pb.ChallengeRequest, context: Ctx) -> pb.ChallengeResponse:  # noqa: N802 (gRPC name)
        return pb.ChallengeResponse(attestation_challenge=self._service.challenge(dict(request.inner)))

    @rpc_errors
    async def ListPolicies(self, request: pb.ListPoliciesRequest, context: Ctx) -> pb.ListPoliciesResponse:  # noqa: N802 (gRPC name)
        infos = [pb.PolicyInfo(policy_id=pid, policy_hash=digest) for pid, digest in await self._service.list_policies()]
        return pb.ListPoliciesResponse(policies=infos)

    @rpc_errors
    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Ctx) -> pb.GetPolicyResponse:  # noqa: N802 (gRPC name)
        text = await self._service.get_policy(request.policy_id)
        return pb.GetPolicyResponse(policy=url_encode(text.encode("utf-8")))

    @rpc_errors
    async def DeletePolicy(self, request: pb.DeletePolicyRequest, context: Ctx) -> pb.DeletePolicyResponse:  # noqa: N802 (gRPC name)
        await audited_change(self._audit, context, "attestation_policy.delete", {"policy_id": request.policy_id}, None,
                             lambda: self._service.delete_policy(request.policy_id))
        return pb.DeletePolicyResponse()

    @rpc_errors
    async def GetJwks(self, request: pb.GetJwksRequest, context: Ctx) -> pb.GetJwksResponse:  # noqa: N802 (gRPC name)
        return pb.GetJwksResponse(jwks=json.dumps(self._service.jwks(), separators=(",", ":")))

    @rpc_errors
    async def GetAppraisalEpoch(self, request: pb.GetAppraisalEpochRequest, context: Ctx) -> pb.GetAppraisalEpochResponse:  # noqa: N802 (gRPC name)
        return pb.GetAppraisalEpochResponse(epoch=await self._service.appraisal_epoch())
