"""gRPC adapter of the CDH: `api.GetResourceService`, `api.SealedSecretService`,
`api.ImagePullService` and `keyprovider.KeyProviderService`, all on one address.

`GetResource` hands the resource URI to the hub and returns the bytes raw;
`UnsealSecret` hands the sealed string to the unsealer and returns the
plaintext; `PullImage` pulls, decrypts and unpacks an image into
`<bundle_path>/rootfs` (guest.cdh.images); `UnWrapKey` answers ocicrypt's
key-provider JSON with the layer key unwrapped by a KBS-held key
(guest.cdh.image_keys), and `WrapKey` is UNIMPLEMENTED (images are
encrypted by `trustee image encrypt`, not in the guest). `rpc_errors` maps failures (INVALID_ARGUMENT bad URI or
malformed secret, UNAUTHENTICATED unsigned or badly signed secret,
RESOURCE_EXHAUSTED oversized secret, NOT_FOUND missing resource,
PERMISSION_DENIED policy deny, UNAVAILABLE KBS or AA down,
FAILED_PRECONDITION no KBS or no verification key configured, NOT_FOUND
image, DATA_LOSS tampered image or wrong key, FAILED_PRECONDITION unsafe
image). None logs resource, secret or key bytes.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from guest.cdh.hub import ResourceHub
from guest.cdh.image_keys import LayerKeys
from guest.cdh.images import ImagePuller
from guest.cdh.unseal import Unsealer
from trustee_common.grpc_errors import rpc_errors
from trustee_common.ocicrypt.keyprovider import parse_unwrap_request, unwrap_response
from trustee_common.serving import new_grpc_server
from trustee_pb import confidential_data_hub_pb2 as pb
from trustee_pb import confidential_data_hub_pb2_grpc as pb_grpc
from trustee_pb import keyprovider_pb2 as kp
from trustee_pb import keyprovider_pb2_grpc as kp_grpc

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


class ImagePullServicer(pb_grpc.ImagePullServiceServicer):
    def __init__(self, puller: ImagePuller) -> None:
        self.puller = puller

    @rpc_errors
    async def PullImage(self, request: pb.ImagePullRequest, context: Context) -> pb.ImagePullResponse:  # noqa: N802
        digest = await self.puller.pull(request.image_url, request.bundle_path)
        return pb.ImagePullResponse(manifest_digest=digest)


class KeyProviderServicer(kp_grpc.KeyProviderServiceServicer):
    def __init__(self, keys: LayerKeys) -> None:
        self.keys = keys

    @rpc_errors
    async def UnWrapKey(self, request: kp.KeyProviderKeyWrapProtocolInput, context: Context) -> kp.KeyProviderKeyWrapProtocolOutput:  # noqa: N802
        packet = parse_unwrap_request(request.KeyProviderKeyWrapProtocolInput)
        plbco = await self.keys.unwrap_packet(packet)
        return kp.KeyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=unwrap_response(plbco))

    async def WrapKey(self, request: kp.KeyProviderKeyWrapProtocolInput, context: Context) -> kp.KeyProviderKeyWrapProtocolOutput:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "WrapKey is not served by the CDH: encrypt images with `trustee image encrypt` (docs/encrypted-images.md)")
        raise AssertionError("unreachable")


SERVICE_NAME = "api.GetResourceService"


def make_server(hub: ResourceHub, unsealer: Unsealer, keys: LayerKeys, puller: ImagePuller) -> grpc.aio.Server:
    server = new_grpc_server()
    pb_grpc.add_GetResourceServiceServicer_to_server(GetResourceServicer(hub), server)
    pb_grpc.add_SealedSecretServiceServicer_to_server(SealedSecretServicer(unsealer), server)
    pb_grpc.add_ImagePullServiceServicer_to_server(ImagePullServicer(puller), server)
    kp_grpc.add_KeyProviderServiceServicer_to_server(KeyProviderServicer(keys), server)
    return server
