"""gRPC client of the Attestation Agent, used by the CDH and the REST server.

One channel per client (opened lazily by grpc, closed by `close()`); every
failure becomes a `TrusteeError` (`serving.call_rpc`). Upstream callers use
a 50 s timeout; so does this client.
"""

from __future__ import annotations

import grpc

from guest.attestation_agent.agent import MeasurementResult
from guest.attestation_agent.serving import call_rpc
from trustee_common.addresses import grpc_target
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS
from trustee_pb import attestation_agent_pb2 as pb
from trustee_pb import attestation_agent_pb2_grpc as pb_grpc

SERVICE = "attestation agent"
CALL_TIMEOUT = 50.0


class AaClient:
    def __init__(self, address: str, timeout: float = CALL_TIMEOUT) -> None:
        self.target = grpc_target(address, "attestation agent address")
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(self.target, options=CLIENT_CHANNEL_OPTIONS)
        self._stub = pb_grpc.AttestationAgentServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def get_token(self, token_type: str) -> bytes:
        reply = await call_rpc(self._stub.GetToken(pb.GetTokenRequest(TokenType=token_type), timeout=self.timeout), SERVICE, self.target)
        return reply.Token

    async def get_evidence(self, runtime_data: bytes) -> bytes:
        request = pb.GetEvidenceRequest(RuntimeData=runtime_data)
        reply = await call_rpc(self._stub.GetEvidence(request, timeout=self.timeout), SERVICE, self.target)
        return reply.Evidence

    async def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        request = pb.GetAdditionalEvidenceRequest(RuntimeData=runtime_data)
        reply = await call_rpc(self._stub.GetAdditionalEvidence(request, timeout=self.timeout), SERVICE, self.target)
        return reply.Evidence

    async def get_tee_type(self) -> str:
        reply = await call_rpc(self._stub.GetTeeType(pb.GetTeeTypeRequest(), timeout=self.timeout), SERVICE, self.target)
        return reply.tee

    async def get_additional_tees(self) -> list[str]:
        call = self._stub.GetAdditionalTees(pb.GetAdditionalTeesRequest(), timeout=self.timeout)
        reply = await call_rpc(call, SERVICE, self.target)
        return list(reply.additional_tees)

    async def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> MeasurementResult:
        request = pb.ExtendRuntimeMeasurementRequest(Domain=domain, Operation=operation, Content=content)
        reply = await call_rpc(self._stub.ExtendRuntimeMeasurement(request, timeout=self.timeout), SERVICE, self.target)
        return MeasurementResult(reply.Result)
