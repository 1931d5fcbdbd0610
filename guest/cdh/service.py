"""gRPC adapter of the CDH: `api.GetResourceService` and `api.SealedSecretService`.

`GetResource` hands the resource URI to the hub and returns the bytes raw;
`UnsealSecret` hands the sealed string to the unsealer and returns the
plaintext. `rpc_errors` maps failures (INVALID_ARGUMENT bad URI or
malformed secret, UNAUTHENTICATED unsigned or badly signed secret,
RESOURCE_EXHAUSTED oversized secret, NOT_FOUND missing resource,
PERMISSION_DENIED policy deny, UNAVAILABLE KBS or AA down,
FAILED_PRECONDITION no KBS or no verification key configured). Neither
logs resource or secret bytes.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from guest.cdh.hub import ResourceHub
from guest.cdh.unseal import Unsealer
from trustee_common.grpc_errors import rpc_errors
from trustee_common.serving import new_grpc_server
from trustee_pb import confidential_data_hub_pb2 as pb
from trustee_pb import confidential_data_hub_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class GetResourceServicer(pb_grpc.GetResourceServiceServicer):
    def __init__(self, hub: ResourceHub) -> None:
        self.hub = hub

    @rpc_errors
    async def GetResource(self, request: pb.GetResourceRequest, context: Context) -> pb.GetResourceResponse:  # noqa: N802
        resource = await self.hub.get_resource(request.ResourcePath)
        logger.info("released resource %s", request.ResourcePath)
        return pb.GetResourceResponse(Resource=resource)


class SealedSecretServicer(pb_grpc.SealedSecretServiceServicer):
    def __init__(self, unsealer: Unsealer) -> None:
        self.unsealer = unsealer

    @rpc_errors
    async def UnsealSecret(self, request: pb.UnsealSecretInput, context: Context) -> pb.UnsealSecretOutput:  # noqa: N802
        return pb.UnsealSecretOutput(plaintext=await self.unsealer.unseal(request.secret))


SERVICE_NAME = "api.GetResourceService"


def make_server(hub: ResourceHub, unsealer: Unsealer) -> grpc.aio.Server:
    server = new_grpc_server()
    pb_grpc.add_GetResourceServiceServicer_to_server(GetResourceServicer(hub), server)
    pb_grpc.add_SealedSecretServiceServicer_to_server(SealedSecretServicer(unsealer), server)
    return server
