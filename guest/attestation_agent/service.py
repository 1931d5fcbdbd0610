"""gRPC adapter: `attestation_agent.AttestationAgentService` over `AttestationAgent`.

Each method converts the protobuf request, calls the core, and builds the
reply; `rpc_errors` maps `TrusteeError`s to status codes (INVALID_ARGUMENT
for an unknown token type, FAILED_PRECONDITION for one that is not
configured, UNAVAILABLE when the KBS cannot be reached).
"""

from __future__ import annotations

from typing import Any

import grpc

from guest.attestation_agent.agent import AttestationAgent, MeasurementResult
from trustee_common.grpc_errors import rpc_errors
from trustee_common.serving import new_grpc_server
from trustee_pb import attestation_agent_pb2 as pb
from trustee_pb import attestation_agent_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

_RESULTS = {
    MeasurementResult.OK: pb.OK,
    MeasurementResult.NOT_SUPPORTED: pb.NOT_SUPPORTED,
    MeasurementResult.NOT_ENABLED: pb.NOT_ENABLED,
}


class AttestationAgentServicer(pb_grpc.AttestationAgentServiceServicer):
    def __init__(self, agent: AttestationAgent) -> None:
        self.agent = agent

    @rpc_errors
    async def GetEvidence(self, request: pb.GetEvidenceRequest, context: Context) -> pb.GetEvidenceResponse:  # noqa: N802
        return pb.GetEvidenceResponse(Evidence=self.agent.get_evidence(request.RuntimeData))

    @rpc_errors
    async def GetAdditionalEvidence(self, request: pb.GetAdditionalEvidenceRequest, context: Context) -> pb.GetEvidenceResponse:  # noqa: N802
        return pb.GetEvidenceResponse(Evidence=self.agent.get_additional_evidence(request.RuntimeData))

    @rpc_errors
    async def GetToken(self, request: pb.GetTokenRequest, context: Context) -> pb.GetTokenResponse:  # noqa: N802
        return pb.GetTokenResponse(Token=await self.agent.get_token(request.TokenType))

    @rpc_errors
    async def ExtendRuntimeMeasurement(  # noqa: N802
        self, request: pb.ExtendRuntimeMeasurementRequest, context: Context
    ) -> pb.ExtendRuntimeMeasurementResponse:
        index = request.RegisterIndex if request.HasField("RegisterIndex") else None
        result = self.agent.extend_runtime_measurement(request.Domain, request.Operation, request.Content, index)
        return pb.ExtendRuntimeMeasurementResponse(Result=_RESULTS[result])

    @rpc_errors
    async def BindInitData(self, request: pb.BindInitDataRequest, context: Context) -> pb.BindInitDataResponse:  # noqa: N802
        self.agent.bind_init_data(request.Digest)
        return pb.BindInitDataResponse()

    @rpc_errors
    async def GetTeeType(self, request: pb.GetTeeTypeRequest, context: Context) -> pb.GetTeeTypeResponse:  # noqa: N802
        return pb.GetTeeTypeResponse(tee=self.agent.tee)

    @rpc_errors
    async def GetAdditionalTees(self, request: pb.GetAdditionalTeesRequest, context: Context) -> pb.GetAdditionalTeesResponse:  # noqa: N802
        return pb.GetAdditionalTeesResponse(additional_tees=self.agent.additional_tees)


SERVICE_NAME = "attestation_agent.AttestationAgentService"


def make_server(agent: AttestationAgent) -> grpc.aio.Server:
    server = new_grpc_server()
    pb_grpc.add_AttestationAgentServiceServicer_to_server(AttestationAgentServicer(agent), server)
    return server
