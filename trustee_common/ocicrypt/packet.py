"""The attestation-agent key provider's AnnotationPacket: a layer's private options wrapped under a KBS-held KEK.

The layer annotation `org.opencontainers.image.enc.keys.provider.attestation-agent`
holds the standard base64 of this JSON (guest-components.md 5.6, 8):

- v1 `{"kid": "kbs:///repo/type/tag", "wrapped_data": <std b64>, "iv": <std b64>,
  "wrap_type": "A256GCM"}`, what `wrap_private_options` writes;
- v2 adds `version` (default "0.1.0"), `provider` (default "kbs"),
  `provider_settings` and `annotations`; v1 JSON reads as v2.

`kid` names the key-encryption key (KEK), a 32-byte KBS resource. With
`A256GCM` the wrapped data is the AES-256-GCM ciphertext of the private
options followed by the 16-byte tag, under a 12-byte nonce `iv`, no AAD;
with `A256CTR` (accepted when unwrapping, never written: it has no
integrity) it is the AES-256-CTR ciphertext under a 16-byte `iv`. Only
the `kbs` provider is supported; other KMS providers are refused by name.
Fetching the KEK is the caller's business (the CDH asks the KBS for
`kid`); this module only parses, wraps and unwraps. Pure: no I/O.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustee_common.b64 import std_decode, std_encode
from trustee_common.bounded import loads_json
from trustee_common.errors import ImageIntegrityError, MalformedRequestError, clip_repr

KEK_BYTES = 32
#: Largest packet, as JSON or as the base64 annotation (real ones are about 300 bytes).
MAX_PACKET_BYTES = 64 * 1024
MAX_PACKET_DEPTH = 8
MAX_KID_CHARS = 1024
PACKET_VERSION = "0.1.0"
PROVIDER_KBS = "kbs"
#: wrap_type → IV length in bytes.
WRAP_IV_BYTES = {"A256GCM": 12, "A256CTR": 16}
GCM_TAG_BYTES = 16

_WHAT = "annotation packet"


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedRequestError(f"{_WHAT}: `{key}` is not a string")
    return value


def _optional_object(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequestError(f"{_WHAT}: `{key}` is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class AnnotationPacket:
    """One parsed packet. `version` None means the v1 form (written without the v2 fields)."""

    kid: str
    wrapped_data: bytes
    iv: bytes | None = None
    wrap_type: str | None = None
    version: str | None = None
    provider: str = PROVIDER_KBS
    provider_settings: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: bytes | str) -> AnnotationPacket:
        doc = loads_json(data, _WHAT, max_bytes=MAX_PACKET_BYTES, max_depth=MAX_PACKET_DEPTH)
        if not isinstance(doc, dict):
            raise MalformedRequestError(f"{_WHAT}: not a JSON object")
        kid, wrapped = doc.get("kid"), doc.get("wrapped_data")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise MalformedRequestError(f"{_WHAT}: `kid` missing, empty or longer than {MAX_KID_CHARS} characters")
        if not isinstance(wrapped, str):
            raise MalformedRequestError(f"{_WHAT}: `wrapped_data` missing or not a base64 string")
        iv = _optional_str(doc, "iv")
        return cls(kid, std_decode(wrapped, f"{_WHAT} `wrapped_data`"),
                   None if iv is None else std_decode(iv, f"{_WHAT} `iv`"), _optional_str(doc, "wrap_type"),
                   _optional_str(doc, "version"), _optional_str(doc, "provider") or PROVIDER_KBS,
                   _optional_object(doc, "provider_settings"), _optional_object(doc, "annotations"))

    @classmethod
    def from_annotation(cls, value: str) -> AnnotationPacket:
        """From one annotation value: the standard base64 of the packet JSON."""
        if len(value) > MAX_PACKET_BYTES:
            raise MalformedRequestError(f"{_WHAT}: annotation larger than {MAX_PACKET_BYTES} bytes")
        return cls.from_json(std_decode(value.strip(), f"{_WHAT} annotation"))

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"kid": self.kid, "wrapped_data": std_encode(self.wrapped_data)}
        if self.iv is not None:
            doc["iv"] = std_encode(self.iv)
        if self.wrap_type is not None:
            doc["wrap_type"] = self.wrap_type
        if self.version is not None:
            doc.update(version=self.version, provider=self.provider, provider_settings=self.provider_settings,
                       annotations=self.annotations)
        return json.dumps(doc, separators=(",", ":")).encode()

    def to_annotation(self) -> str:
        return std_encode(self.to_json())


def wrap_private_options(plbco: bytes, kek: bytes, kid: str) -> AnnotationPacket:
    """A v1 A256GCM packet holding `plbco` encrypted under `kek` (fresh 12-byte nonce), named `kid`."""
    _check_kek(kek)
    if not kid or len(kid) > MAX_KID_CHARS:
        raise MalformedRequestError(f"{_WHAT}: `kid` empty or longer than {MAX_KID_CHARS} characters")
    iv = os.urandom(WRAP_IV_BYTES["A256GCM"])
    return AnnotationPacket(kid, AESGCM(kek).encrypt(iv, plbco, None), iv, "A256GCM")


def unwrap_private_options(packet: AnnotationPacket, kek: bytes) -> bytes:
    """The private options `packet` wraps, opened with `kek` (the KBS resource `packet.kid`)."""
    check_unwrappable(packet)
    _check_kek(kek)
    assert packet.iv is not None  # checked above
    if packet.wrap_type == "A256CTR":
        decryptor = Cipher(algorithms.AES(kek), modes.CTR(packet.iv)).decryptor()
        return decryptor.update(packet.wrapped_data) + decryptor.finalize()
    if len(packet.wrapped_data) < GCM_TAG_BYTES:
        raise MalformedRequestError(f"{_WHAT}: `wrapped_data` is shorter than the {GCM_TAG_BYTES}-byte GCM tag")
    try:
        return AESGCM(kek).decrypt(packet.iv, packet.wrapped_data, None)
    except InvalidTag:
        raise ImageIntegrityError(f"the key-encryption key does not open the layer key wrapped under {clip_repr(packet.kid)} "
                                  "(wrong KEK, or the annotation was altered)") from None


def check_unwrappable(packet: AnnotationPacket) -> None:
    """`MalformedRequestError` naming what stops this module from unwrapping `packet` (before the KEK is fetched)."""
    if packet.provider != PROVIDER_KBS:
        raise MalformedRequestError(f"{_WHAT}: provider {clip_repr(packet.provider)} is not supported (only {PROVIDER_KBS!r})")
    if packet.version is not None and packet.version != PACKET_VERSION:
        raise MalformedRequestError(f"{_WHAT}: version {clip_repr(packet.version)} is not supported (only {PACKET_VERSION})")
    if packet.wrap_type not in WRAP_IV_BYTES:
        shown = "missing" if packet.wrap_type is None else clip_repr(packet.wrap_type)
        raise MalformedRequestError(f"{_WHAT}: wrap_type {shown} is not supported (A256GCM or A256CTR)")
    expected = WRAP_IV_BYTES[packet.wrap_type]
    if packet.iv is None or len(packet.iv) != expected:
        got = "missing" if packet.iv is None else f"{len(packet.iv)} bytes"
        raise MalformedRequestError(f"{_WHAT}: iv is {got}, {packet.wrap_type} needs {expected} bytes")


def _check_kek(kek: bytes) -> None:
    if len(kek) != KEK_BYTES:
        raise MalformedRequestError(f"key-encryption key: {len(kek)} bytes, an A256GCM/A256CTR KEK is {KEK_BYTES} bytes")
