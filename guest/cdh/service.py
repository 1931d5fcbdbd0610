"""gRPC adapter of the CDH: `api.GetResourceService` and a refusing `api.SealedSecretService`.

`GetResource` hands the resource URI to the hub and returns the bytes raw;
`rpc_errors` maps failures (INVALID_ARGUMENT bad URI, NOT_FOUND missing
resource, PERMISSION_DENIED policy deny, UNAVAILABLE KBS or AA down,
FAILED_PRECONDITION no KBS configured). `UnsealSecret` answers
UNIMPLEMENTED with a message saying so.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from guest.cdh.hub import ResourceHub
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
    async def UnsealSecret(self, request: pb.UnsealSecretInput, context: Context) -> pb.UnsealSecretOutput:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "sealed secrets are not implemented by this confidential data hub")
        raise AssertionError("unreachable: context.abort raises")


SERVICE_NAME = "api.GetResourceService"


def make_server(hub: ResourceHub) -> grpc.aio.Server:
    server = new_grpc_server()
    pb_grpc.add_GetResourceServiceServicer_to_server(GetResourceServicer(hub), server)
    pb_grpc.add_SealedSecretServiceServicer_to_server(SealedSecretServicer(), server)
    return server
