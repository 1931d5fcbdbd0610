"""Keys of encrypted image layers: the CDH side of ocicrypt's key unwrapping.

An encrypted layer carries its layer key (the private layer block cipher
options, PLBCO) wrapped in one or both of two annotations:

- `org.opencontainers.image.enc.keys.provider.attestation-agent`: one or
  more (comma-separated) annotation packets, each naming a key-encryption
  key by KBS resource URI (`kid`). The CDH fetches that resource through the
  attested KBS path (`ResourceHub`, which caches and refreshes its token), so
  the KBS resource policy decides, and unwraps the PLBCO. This is what
  `trustee image encrypt` writes and what guest-components' keyprovider
  `UnWrapKey` serves.
- `org.opencontainers.image.enc.keys.jwe`: JWEs to ocicrypt recipients, as
  `skopeo copy --encryption-key jwe:pub.pem` writes them. The CDH opens them
  with the private keys held at the KBS resources listed in `[image]
  decryption_keys` (fetched the same attested way, PEM or JWK).

Packets are tried first; a layer no configured key opens is refused with
an error naming why each way failed. Private keys and PLBCOs are never
logged or kept beyond one layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from jwcrypto import jwk

from trustee_common.errors import ImageIntegrityError, MalformedRequestError, TrusteeError, UnsafeImageError, clip
from trustee_common.ocicrypt import (
    JWE_ANNOTATION,
    PROVIDER_ANNOTATION,
    AnnotationPacket,
    PrivateLayerOptions,
    PublicLayerOptions,
    check_unwrappable,
    decrypt_layer,
    public_options_of,
    unwrap_private_options,
    unwrap_with_private_keys,
    wrapped_values,
)

logger = logging.getLogger(__name__)


class ResourceSource(Protocol):
    async def get_resource(self, uri: str) -> bytes:
        """A KBS resource, fetched through the attested path."""


class LayerKeys:
    """Opens layer keys with KBS-held keys; `decrypt` is the image puller's `LayerDecrypter`."""

    def __init__(self, resources: ResourceSource, decryption_keys: tuple[str, ...] = ()) -> None:
        self._resources = resources
        self._decryption_keys = decryption_keys

    async def unwrap_packet(self, packet: AnnotationPacket) -> bytes:
        """The PLBCO that `packet` wraps, with the KEK fetched from the KBS as `packet.kid`."""
        check_unwrappable(packet)
        kek = await self._resources.get_resource(packet.kid)
        return unwrap_private_options(packet, kek)

    async def private_options(self, descriptor: dict[str, Any]) -> PrivateLayerOptions:
        """The layer key of the encrypted layer `descriptor`: from a key packet, else from a JWE recipient."""
        packets = wrapped_values(descriptor, PROVIDER_ANNOTATION)
        jwe = wrapped_values(descriptor, JWE_ANNOTATION)
        if not packets and not jwe:
            raise UnsafeImageError(f"encrypted layer {clip(str(descriptor.get('digest')), 80)} has no key this CDH can unwrap "
                                   f"(neither {PROVIDER_ANNOTATION} nor {JWE_ANNOTATION})")
        failures: list[TrusteeError] = []
        for value in packets:
            try:
                return PrivateLayerOptions.from_json(await self.unwrap_packet(AnnotationPacket.from_annotation(value)))
            except TrusteeError as exc:
                failures.append(exc)
        if jwe:
            try:
                return PrivateLayerOptions.from_json(unwrap_with_private_keys(",".join(jwe), await self._private_keys()))
            except TrusteeError as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]  # keeps its class: a policy deny stays PolicyDeny
        raise ImageIntegrityError("no configured key opens the encrypted layer: " + "; ".join(f.detail for f in failures))

    async def _private_keys(self) -> list[bytes]:
        if not self._decryption_keys:
            raise UnsafeImageError("the layer is encrypted to JWE recipients and no [image] decryption_keys are configured")
        keys = []
        for uri in self._decryption_keys:
            keys.append(_as_pem(await self._resources.get_resource(uri), uri))
        return keys

    async def decrypt(self, descriptor: dict[str, Any], encrypted: Path, plain: Path) -> None:
        """Write the plaintext blob of the encrypted layer `descriptor` (read from `encrypted`) to `plain`."""
        public = public_options_of(descriptor)
        private = await self.private_options(descriptor)
        await asyncio.to_thread(_decrypt_file, encrypted, plain, private, public)


def _decrypt_file(encrypted: Path, plain: Path, private: PrivateLayerOptions, public: PublicLayerOptions) -> None:
    try:
        with encrypted.open("rb") as src, plain.open("wb") as dst:
            decrypt_layer(src, dst, private, public)
    except BaseException:
        plain.unlink(missing_ok=True)
        raise


def _as_pem(data: bytes, uri: str) -> bytes:
    """A private key resource as PEM: PEM as it is, a JWK converted."""
    if data.lstrip().startswith(b"{"):
        try:
            key = jwk.JWK.from_json(data.decode())
            return bytes(key.export_to_pem(private_key=True, password=None))
        except (ValueError, TypeError, json.JSONDecodeError, jwk.InvalidJWKValue, jwk.InvalidJWKType) as exc:
            raise MalformedRequestError(f"image decryption key {uri}: not a usable private JWK ({type(exc).__name__})") from None
    return data
