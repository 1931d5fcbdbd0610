"""The two option documents of an ocicrypt layer: what opens the layer (private) and what checks it (public).

ocicrypt's cipher `AES_256_CTR_HMAC_SHA256` keeps per layer:

- `PrivateLayerOptions` (ocicrypt's PrivateLayerBlockCipherOptions, "PLBCO"):
  `{"symkey": <std b64 of 32 bytes>, "digest": "sha256:<hex>",
  "cipheroptions": {"nonce": <std b64 of 16 bytes>}}`, the JSON that the
  key wrappers (the attestation-agent key provider, JWE recipients)
  encrypt. `digest` is the digest of the layer blob before encryption
  (the compressed tarball).
- `PublicLayerOptions`: `{"cipher": "AES_256_CTR_HMAC_SHA256", "hmac":
  <std b64 of 32 bytes>, "cipheroptions": {}}`, stored in clear (base64) in
  the layer annotation `org.opencontainers.image.enc.pubopts`.

Field names and the base64 flavour (standard, padded) are those of Go's
`encoding/json` on ocicrypt's structs, so documents written here are read
by skopeo, containerd's imgcrypt and ocicrypt-rs, and theirs by us.
Parsing is strict about types and lengths and bounded in size and depth;
unknown keys are ignored, as Go's decoder does. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from trustee_common.b64 import std_decode, std_encode
from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError

CIPHER = "AES_256_CTR_HMAC_SHA256"
SYMKEY_BYTES = 32
NONCE_BYTES = 16
HMAC_BYTES = 32
#: Largest option document accepted (real ones are about 200 bytes).
MAX_OPTIONS_BYTES = 64 * 1024
MAX_OPTIONS_DEPTH = 4

_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


def _object(data: bytes | str, what: str) -> dict[str, Any]:
    value = loads_json(data, what, max_bytes=MAX_OPTIONS_BYTES, max_depth=MAX_OPTIONS_DEPTH)
    if not isinstance(value, dict):
        raise MalformedRequestError(f"{what}: not a JSON object")
    return value


def _bytes_field(doc: dict[str, Any], key: str, what: str, length: int) -> bytes:
    value = doc.get(key)
    if not isinstance(value, str):
        raise MalformedRequestError(f"{what}: `{key}` missing or not a base64 string")
    raw = std_decode(value, f"{what} `{key}`")
    if len(raw) != length:
        raise MalformedRequestError(f"{what}: `{key}` is {len(raw)} bytes, expected {length}")
    return raw


def _cipher_options(doc: dict[str, Any], what: str) -> dict[str, Any]:
    options = doc.get("cipheroptions")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise MalformedRequestError(f"{what}: `cipheroptions` is not a JSON object")
    return options


def check_digest(value: object, what: str) -> str:
    """An OCI content digest `sha256:<64 hex>` (or sha512); `MalformedRequestError` otherwise."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise MalformedRequestError(f"{what}: not a sha256:<hex> digest")
    return value


@dataclass(frozen=True, slots=True)
class PrivateLayerOptions:
    """The secret half: the layer key, the CTR nonce and the digest of the plaintext blob."""

    symkey: bytes
    nonce: bytes
    digest: str

    def __post_init__(self) -> None:
        if len(self.symkey) != SYMKEY_BYTES or len(self.nonce) != NONCE_BYTES:
            raise MalformedRequestError(f"private layer options: symkey must be {SYMKEY_BYTES} bytes and nonce {NONCE_BYTES}")
        check_digest(self.digest, "private layer options `digest`")

    def __repr__(self) -> str:  # never print the key
        return f"PrivateLayerOptions(digest={self.digest!r})"

    @classmethod
    def from_json(cls, data: bytes | str) -> PrivateLayerOptions:
        what = "private layer options"
        doc = _object(data, what)
        symkey = _bytes_field(doc, "symkey", what, SYMKEY_BYTES)
        digest = check_digest(doc.get("digest"), f"{what} `digest`")
        nonce = _bytes_field(_cipher_options(doc, what), "nonce", f"{what} cipheroptions", NONCE_BYTES)
        return cls(symkey, nonce, digest)

    def to_json(self) -> bytes:
        return json.dumps({"symkey": std_encode(self.symkey), "digest": self.digest,
                           "cipheroptions": {"nonce": std_encode(self.nonce)}}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class PublicLayerOptions:
    """The public half: the HMAC-SHA256 of the ciphertext (the cipher is always AES_256_CTR_HMAC_SHA256)."""

    hmac: bytes

    def __post_init__(self) -> None:
        if len(self.hmac) != HMAC_BYTES:
            raise MalformedRequestError(f"public layer options: hmac must be {HMAC_BYTES} bytes")

    @classmethod
    def from_json(cls, data: bytes | str) -> PublicLayerOptions:
        what = "public layer options"
        doc = _object(data, what)
        cipher = doc.get("cipher")
        if cipher != CIPHER:
            shown = cipher if isinstance(cipher, str) else type(cipher).__name__
            raise MalformedRequestError(f"{what}: cipher {shown[:64]!r} is not supported (only {CIPHER})")
        _cipher_options(doc, what)
        return cls(_bytes_field(doc, "hmac", what, HMAC_BYTES))

    def to_json(self) -> bytes:
        return json.dumps({"cipher": CIPHER, "hmac": std_encode(self.hmac), "cipheroptions": {}},
                          separators=(",", ":")).encode()

    @classmethod
    def from_annotation(cls, value: str) -> PublicLayerOptions:
        """From the `org.opencontainers.image.enc.pubopts` annotation (std base64 of the JSON)."""
        if len(value) > MAX_OPTIONS_BYTES:
            raise MalformedRequestError(f"pubopts annotation: larger than {MAX_OPTIONS_BYTES} bytes")
        return cls.from_json(std_decode(value, "pubopts annotation"))

    def to_annotation(self) -> str:
        return std_encode(self.to_json())
