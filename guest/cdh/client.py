"""gRPC client of the CDH's GetResource, UnsealSecret and PullImage (the REST server, `trustee guest pull-image`).

Importing `guest.cdh.sealed` registers its error variant, so a refused
secret comes back as the same `SecretVerificationError` class.
"""

from __future__ import annotations

import grpc

from guest.attestation_agent.serving import call_rpc
from guest.cdh import sealed  # noqa: F401  (registers SecretVerificationError for error_from_rpc)
from trustee_common.addresses import grpc_target
from trustee_common.serving import CLIENT_CHANNEL_OPTIONS
from trustee_pb import confidential_data_hub_pb2 as pb
from trustee_pb import confidential_data_hub_pb2_grpc as pb_grpc

SERVICE = "confidential data hub"
CALL_TIMEOUT = 50.0
#: A pull downloads, decrypts and unpacks a whole image.
PULL_TIMEOUT = 1800.0


class CdhClient:
    def __init__(self, address: str, timeout: float = CALL_TIMEOUT) -> None:
        self.target = grpc_target(address, "confidential data hub address")
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(self.target, options=CLIENT_CHANNEL_OPTIONS)
        self._stub = pb_grpc.GetResourceServiceStub(self._channel)
        self._secrets = pb_grpc.SealedSecretServiceStub(self._channel)
        self._images = pb_grpc.ImagePullServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def get_resource(self, uri: str) -> bytes:
        call = self._stub.GetResource(pb.GetResourceRequest(ResourcePath=uri), timeout=self.timeout)
        reply = await call_rpc(call, SERVICE, self.target)
        return reply.Resource

    async def unseal_secret(self, secret: bytes) -> bytes:
        call = self._secrets.UnsealSecret(pb.UnsealSecretInput(secret=secret), timeout=self.timeout)
        reply = await call_rpc(call, SERVICE, self.target)
        return reply.plaintext

    async def pull_image(self, image_url: str, bundle_path: str) -> str:
        """Pull and unpack `image_url` into `<bundle_path>/rootfs` (within PULL_TIMEOUT); the manifest digest."""
        call = self._images.PullImage(pb.ImagePullRequest(image_url=image_url, bundle_path=bundle_path), timeout=PULL_TIMEOUT)
        reply = await call_rpc(call, SERVICE, self.target)
        return reply.manifest_digest
