"""Sealed secrets: upstream's `sealed.<header>.<payload>.<signature>` format, version 0.1.0.

The part after `sealed.` is a JWS in compact serialization (base64url
without padding). The protected header is `{"alg": "ES256", "kid": <id>}`
(only ES256, as upstream); the signature is the raw 64-byte r||s P-256
ECDSA signature over `<header>.<payload>`. The payload is JSON with
`version` "0.1.0" and `type`:

- `vault`: `name` (a `kbs:///...` resource URI), `provider` (`kbs`, or
  upstream's alias `cc_kbc`), `provider_settings`, `annotations`. The
  plaintext is the resource itself.
- `envelope`: `key_id`, `encrypted_key`, `encrypted_data`, `wrap_type`
  (`A256GCM` or `A256CTR`), `iv`, `provider`, `provider_settings`,
  `annotations` (upstream's field names; base64 fields are standard
  base64 with padding). Upstream has no `kbs` decryptor; this one adds
  provider `kbs`: `key_id` is the `kbs:///...` URI of a 32-byte AES key
  (the KEK) and `encrypted_key` is the AES-256-GCM ciphertext||tag of the
  32-byte data key under it, with its 12-byte nonce in `annotations.iv`
  (where upstream's aliyun decryptor keeps its iv). `encrypted_data` is the
  secret under the data key: ciphertext||16-byte tag with a 12-byte `iv`
  (A256GCM), or ciphertext with a 16-byte big-endian counter `iv` (A256CTR).

Verification keys are EC P-256 public keys as a JWK (upstream's form) or a
PEM SubjectPublicKeyInfo. Errors: a secret whose signature cannot be
checked or does not verify is `SecretVerificationError` (gRPC
UNAUTHENTICATED, REST 403); a malformed one `MalformedRequestError`; one
larger than `MAX_SEALED_BYTES` `PayloadTooLargeError`. Pure: no I/O; no
secret bytes in error messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from guest.resource_uri import ResourceUri
from trustee_common.b64 import std_decode, std_encode, url_decode, url_encode
from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError, PayloadTooLargeError, TokenVerifierError, TrusteeError, clip_repr

PREFIX = "sealed."
VERSION = "0.1.0"
ALG = "ES256"
#: The whole sealed string: sealed secrets carry small values (passwords, keys); larger data belongs in a vault resource.
MAX_SEALED_BYTES = 64 * 1024
#: A verification key (JWK or PEM) read from a file or the KBS.
MAX_KEY_BYTES = 16 * 1024
KEY_BYTES = 32
GCM_IV_BYTES = 12
CTR_IV_BYTES = 16
GCM_TAG_BYTES = 16
WRAP_TYPES = ("A256GCM", "A256CTR")
KBS_PROVIDERS = ("kbs", "cc_kbc")
_COORDINATE_BYTES = 32


class SecretVerificationError(TokenVerifierError):
    """A sealed secret that is unsigned, signed with an untrusted key, or whose signature does not verify."""

    variant = "SealedSecretVerification"


# --- keys ----------------------------------------------------------------------


def load_verification_key(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """An EC P-256 public key from a JWK (`kty` EC, `crv` P-256, `x`, `y`) or a PEM public key."""
    if len(data) > MAX_KEY_BYTES:
        raise MalformedRequestError(f"{what}: larger than {MAX_KEY_BYTES} bytes")
    if data.lstrip().startswith(b"{"):
        return _jwk_public_key(loads_json(data, what), what)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise MalformedRequestError(f"{what}: neither a JWK nor a PEM public key") from None
    return _p256(key, what)


def _p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedRequestError(f"{what}: must be an EC P-256 key (ES256)")
    return key


def _jwk_public_key(jwk: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise MalformedRequestError(f"{what}: must be an EC P-256 JWK (kty EC, crv P-256)")
    coords = [jwk.get(name) for name in ("x", "y")]
    if not all(isinstance(c, str) for c in coords):
        raise MalformedRequestError(f"{what}: JWK needs x and y")
    x, y = (url_decode(str(c), f"{what} JWK coordinate") for c in coords)
    if len(x) != _COORDINATE_BYTES or len(y) != _COORDINATE_BYTES:
        raise MalformedRequestError(f"{what}: JWK coordinates must be 32 bytes")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y), ec.SECP256R1()).public_key()
    except ValueError:
        raise MalformedRequestError(f"{what}: JWK point is not on P-256") from None


def load_signing_key(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    """An EC P-256 private key from PEM (PKCS#8 or SEC1) or a private JWK (upstream's `secret keygen` output)."""
    if data.lstrip().startswith(b"{"):
        jwk = loads_json(data, what, max_bytes=MAX_KEY_BYTES)
        public = _jwk_public_key(jwk, what)
        d = jwk.get("d")
        if not isinstance(d, str):
            raise MalformedRequestError(f"{what}: JWK has no private part d")
        key = ec.derive_private_key(int.from_bytes(url_decode(d, f"{what} JWK d")), ec.SECP256R1())
        if key.public_key().public_numbers() != public.public_numbers():
            raise MalformedRequestError(f"{what}: JWK d does not match x, y")
        return key
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise MalformedRequestError(f"{what}: neither a private JWK nor an unencrypted PEM private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, ec.SECP256R1):
        raise MalformedRequestError(f"{what}: must be an EC P-256 key (ES256)")
    return loaded


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": url_encode(numbers.x.to_bytes(_COORDINATE_BYTES)),
            "y": url_encode(numbers.y.to_bytes(_COORDINATE_BYTES))}


# --- JWS -----------------------------------------------------------------------


@dataclass(frozen=True)
class SignedSecret:
    """A parsed sealed string; `payload` is not trusted until `verify` passes."""

    kid: str
    signing_input: bytes
    signature: bytes
    payload: bytes

    def verify(self, key: ec.EllipticCurvePublicKey) -> bytes:
        """The payload, if the signature verifies with `key`."""
        if len(self.signature) != 2 * _COORDINATE_BYTES:
            raise SecretVerificationError(f"sealed secret signature must be 64 bytes (ES256 r||s), got {len(self.signature)}")
        r = int.from_bytes(self.signature[:_COORDINATE_BYTES])
        s = int.from_bytes(self.signature[_COORDINATE_BYTES:])
        try:
            key.verify(encode_dss_signature(r, s), self.signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SecretVerificationError(f"sealed secret signature does not verify with key {clip_repr(self.kid)}") from None
        return self.payload


def parse_sealed(secret: bytes) -> SignedSecret:
    """Split and decode a sealed string; the signature is checked later with the key `kid` names."""
    if len(secret) > MAX_SEALED_BYTES:
        raise PayloadTooLargeError(f"sealed secret larger than {MAX_SEALED_BYTES} bytes")
    try:
        text = secret.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedRequestError("sealed secret must be ASCII text") from None
    if not text.startswith(PREFIX):
        raise MalformedRequestError("not a sealed secret: it must start with 'sealed.'")
    parts = text.removeprefix(PREFIX).split(".")
    if len(parts) != 3:
        raise MalformedRequestError("sealed secret must be sealed.<header>.<payload>.<signature>")
    header_b64, payload_b64, signature_b64 = parts
    if not signature_b64:
        raise SecretVerificationError("sealed secret is not signed: unsigned secrets are refused")
    kid = _header_kid(header_b64)
    payload = url_decode(payload_b64, "sealed secret payload")
    signature = url_decode(signature_b64, "sealed secret signature")
    return SignedSecret(kid, f"{header_b64}.{payload_b64}".encode(), signature, payload)


def _header_kid(header_b64: str) -> str:
    try:
        header = loads_json(url_decode(header_b64, "header"), "header", max_bytes=4096, max_depth=4)
    except TrusteeError:
        raise SecretVerificationError("sealed secret header is not base64url JSON: unsigned (legacy) secrets are refused") from None
    if not isinstance(header, dict):
        raise SecretVerificationError("sealed secret header must be a JSON object")
    if header.get("alg") != ALG:
        raise SecretVerificationError(f"sealed secret alg {clip_repr(header.get('alg'))} is not supported (only ES256)")
    if "crit" in header:
        raise SecretVerificationError("sealed secret header has crit extensions, which are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise SecretVerificationError("sealed secret header has no kid")
    return kid


def sign(payload: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """The sealed string of `payload` signed with `key` under `kid` (ES256)."""
    header_b64 = url_encode(json.dumps({"alg": ALG, "kid": kid}, separators=(",", ":")).encode())
    payload_b64 = url_encode(json.dumps(payload, separators=(",", ":")).encode())
    der = key.sign(f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_COORDINATE_BYTES) + s.to_bytes(_COORDINATE_BYTES)
    return f"{PREFIX}{header_b64}.{payload_b64}.{url_encode(signature)}"


# --- payload -------------------------------------------------------------------


@dataclass(frozen=True)
class VaultSecret:
    name: str

    def payload(self) -> dict[str, Any]:
        return {"version": VERSION, "type": "vault", "name": self.name, "provider": "kbs", "provider_settings": {},
                "annotations": {}}


@dataclass(frozen=True)
class EnvelopeSecret:
    key_id: str
    encrypted_key: bytes
    encrypted_data: bytes
    wrap_type: str
    iv: bytes
    key_iv: bytes

    def payload(self) -> dict[str, Any]:
        return {"version": VERSION, "type": "envelope", "key_id": self.key_id, "encrypted_key": std_encode(self.encrypted_key),
                "encrypted_data": std_encode(self.encrypted_data), "wrap_type": self.wrap_type, "iv": std_encode(self.iv),
                "provider": "kbs", "provider_settings": {}, "annotations": {"iv": std_encode(self.key_iv)}}

    def data_key(self, kek: bytes) -> bytes:
        """The data key, unwrapped with the KEK (AES-256-GCM)."""
        if len(kek) != KEY_BYTES:
            raise MalformedRequestError(f"envelope key {clip_repr(self.key_id)} must be a 32-byte AES-256 key, got {len(kek)} bytes")
        if len(self.key_iv) != GCM_IV_BYTES:
            raise MalformedRequestError(f"envelope annotations.iv must be {GCM_IV_BYTES} bytes")
        try:
            dek = AESGCM(kek).decrypt(self.key_iv, self.encrypted_key, None)
        except InvalidTag:
            raise MalformedRequestError(f"envelope encrypted_key does not decrypt with key {clip_repr(self.key_id)}") from None
        if len(dek) != KEY_BYTES:
            raise MalformedRequestError("envelope data key must be 32 bytes")
        return dek

    def open(self, dek: bytes) -> bytes:
        """The plaintext of `encrypted_data` under the data key."""
        if self.wrap_type == "A256CTR":
            if len(self.iv) != CTR_IV_BYTES:
                raise MalformedRequestError(f"envelope iv must be {CTR_IV_BYTES} bytes for A256CTR")
            decryptor = Cipher(algorithms.AES(dek), modes.CTR(self.iv)).decryptor()
            return decryptor.update(self.encrypted_data) + decryptor.finalize()
        if len(self.iv) != GCM_IV_BYTES:
            raise MalformedRequestError(f"envelope iv must be {GCM_IV_BYTES} bytes for A256GCM")
        try:
            return AESGCM(dek).decrypt(self.iv, self.encrypted_data, None)
        except InvalidTag:
            raise MalformedRequestError("envelope encrypted_data does not decrypt with its data key") from None


Secret = VaultSecret | EnvelopeSecret


def parse_payload(payload: bytes) -> Secret:
    """A verified payload as a secret this CDH can open (provider `kbs`)."""
    body = loads_json(payload, "sealed secret payload", max_bytes=MAX_SEALED_BYTES, max_depth=8)
    if not isinstance(body, dict):
        raise MalformedRequestError("sealed secret payload must be a JSON object")
    if body.get("version") != VERSION:
        raise MalformedRequestError(f"sealed secret version {clip_repr(body.get('version'))} is not supported (only {VERSION})")
    for key in ("provider_settings", "annotations"):
        if not isinstance(body.get(key, {}), dict):
            raise MalformedRequestError(f"sealed secret {key} must be a JSON object")
    kind = body.get("type")
    provider = _string(body, "provider")
    if kind not in ("vault", "envelope"):
        raise MalformedRequestError(f"sealed secret type {clip_repr(kind)} is not supported (vault or envelope)")
    if provider.lower() not in (KBS_PROVIDERS if kind == "vault" else ("kbs",)):
        raise MalformedRequestError(f"{kind} provider {clip_repr(provider)} is not supported by this confidential data hub (only kbs)")
    if kind == "vault":
        return VaultSecret(_resource_uri(body, "name"))
    return _envelope(body)


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MalformedRequestError(f"sealed secret field {key} must be a string")
    return value


def _resource_uri(body: dict[str, Any], key: str) -> str:
    uri = _string(body, key)
    ResourceUri.parse(uri)
    return uri


def _envelope(body: dict[str, Any]) -> EnvelopeSecret:
    wrap_type = _string(body, "wrap_type")
    if wrap_type not in WRAP_TYPES:
        raise MalformedRequestError(f"envelope wrap_type {clip_repr(wrap_type)} is not supported (A256GCM or A256CTR)")
    annotations: dict[str, Any] = body.get("annotations", {})
    key_iv = annotations.get("iv")
    if not isinstance(key_iv, str):
        raise MalformedRequestError("envelope with provider kbs needs annotations.iv (the data key's AES-GCM nonce)")
    return EnvelopeSecret(
        key_id=_resource_uri(body, "key_id"),
        encrypted_key=std_decode(_string(body, "encrypted_key"), "encrypted_key"),
        encrypted_data=std_decode(_string(body, "encrypted_data"), "encrypted_data"),
        wrap_type=wrap_type,
        iv=std_decode(_string(body, "iv"), "iv"),
        key_iv=std_decode(key_iv, "annotations.iv"),
    )


def seal_envelope(plaintext: bytes, key_id: str, kek: bytes) -> EnvelopeSecret:
    """A new envelope: a random data key encrypts `plaintext` (A256GCM); the KEK wraps the data key."""
    ResourceUri.parse(key_id)
    if len(kek) != KEY_BYTES:
        raise MalformedRequestError(f"the key encryption key must be 32 bytes (AES-256), got {len(kek)}")
    dek = AESGCM.generate_key(bit_length=256)
    iv, key_iv = os.urandom(GCM_IV_BYTES), os.urandom(GCM_IV_BYTES)
    return EnvelopeSecret(key_id=key_id, encrypted_key=AESGCM(kek).encrypt(key_iv, dek, None),
                          encrypted_data=AESGCM(dek).encrypt(iv, plaintext, None), wrap_type="A256GCM", iv=iv, key_iv=key_iv)
