"""The clevis JWE of the `trustee` pin: compact serialization, `dir` + `A256GCM`.

Pure (only `cryptography`). The protected header is

```
{"alg": "dir", "enc": "A256GCM", "kid": "<RFC 7638 SHA-256 thumbprint of the key>",
 "clevis": {"pin": "trustee", "trustee": {"url": ..., "path": ..., "cdh": ...}}}
```

as clevis's own pins write theirs (`clevis decrypt` dispatches on
`clevis.pin`). The content key is the 32-byte key the KBS holds at `path`,
stored there as the JWK `{"kty": "oct", "k": "<base64url>"}`; the JWE
carries no key material, only its thumbprint (`kid`), so a key replaced
at the KBS is told apart from a damaged JWE. The header is the AES-GCM
additional data: changing any byte of it, the IV, the ciphertext or the
tag makes decryption fail.

Decrypt also reads the JWEs of latchset's `clevis-pin-trustee` (the Rust
pin of the same name; its header puts `servers: [{"url", "cert"}]` and
`path` directly under `clevis`, without `kid`). Its key resource is the
JSON `{"key_type": "oct", "key": "<string>"}` whose key bytes are the
UTF-8 bytes of `key` (how that pin builds its JWK), 32 of them for
A256GCM. Such a JWE is opened through the local CDH like ours; the
`servers` URLs are not contacted (the CDH's own KBS is).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustee_common.b64 import url_decode, url_encode
from trustee_common.errors import MalformedRequestError, TrusteeError

PIN = "trustee"
ALG = "dir"
ENC = "A256GCM"
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
#: Largest JWE read from stdin (clevis can encrypt whole files; LUKS keys are tiny).
MAX_JWE_BYTES = 64 * 1024 * 1024


class PinError(TrusteeError):
    """Anything the pin refuses; `detail` is the one line printed on stderr."""

    variant = "ClevisPinError"


#: The header forms decrypt reads: ours (`clevis.trustee`) and latchset's (`clevis.servers`, `clevis.path`).
OURS = "trustee"
LATCHSET = "latchset"


@dataclass(frozen=True)
class PinHeader:
    """What the protected header says about where the key lives (`kid` is None in latchset's form)."""

    url: str
    path: str
    cdh: str | None
    kid: str | None
    form: str = OURS


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def key_jwk(key: bytes) -> bytes:
    """The KBS resource: the key as an `oct` JWK (what `jose jwe dec -k` reads too)."""
    return json.dumps({"kty": "oct", "k": url_encode(key)}, separators=(",", ":")).encode()


def key_from_resource(resource: bytes, header: PinHeader) -> bytes:
    """The content key from the KBS resource, in the form the JWE's header form implies."""
    if header.form == LATCHSET:
        return _latchset_key(resource, header.path)
    return key_from_jwk(resource, header.path)


def _latchset_key(resource: bytes, path: str) -> bytes:
    try:
        body = json.loads(resource)
    except ValueError:
        body = None
    value = body.get("key") if isinstance(body, dict) and body.get("key_type") == "oct" else None
    key = value.encode() if isinstance(value, str) else b""
    if len(key) != KEY_BYTES:
        raise PinError(f"the KBS resource {path} is not {{\"key_type\": \"oct\", \"key\": <{KEY_BYTES} bytes>}} "
                       "(what clevis-pin-trustee JWEs need)")
    return key


def key_from_jwk(resource: bytes, path: str) -> bytes:
    """The 32-byte key of the resource at `path`, or `PinError` saying what the resource is instead."""
    try:
        jwk = json.loads(resource)
        key = url_decode(jwk["k"], "k") if isinstance(jwk, dict) and jwk.get("kty") == "oct" and isinstance(jwk.get("k"), str) else b""
    except (ValueError, MalformedRequestError):
        key = b""
    if len(key) != KEY_BYTES:
        raise PinError(f"the KBS resource {path} is not a 256-bit oct JWK (not written by clevis-encrypt-trustee?)")
    return key


def thumbprint(key: bytes) -> str:
    """RFC 7638 SHA-256 thumbprint of the oct JWK of `key` (required members `k`, `kty` in order, no spaces)."""
    canonical = json.dumps({"k": url_encode(key), "kty": "oct"}, separators=(",", ":")).encode()
    return url_encode(hashlib.sha256(canonical).digest())


def encrypt(key: bytes, pin_config: dict[str, str], plaintext: bytes) -> str:
    """Compact JWE of `plaintext` under `key`, with `pin_config` as `clevis.trustee`."""
    header = {"alg": ALG, "enc": ENC, "kid": thumbprint(key), "clevis": {"pin": PIN, PIN: pin_config}}
    protected = url_encode(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(key).encrypt(iv, plaintext, protected.encode("ascii"))
    return ".".join([protected, "", url_encode(iv), url_encode(sealed[:-TAG_BYTES]), url_encode(sealed[-TAG_BYTES:])])


def _parts(jwe: str) -> list[str]:
    parts = jwe.strip().split(".")
    if len(parts) != 5:
        raise PinError(f"input is not a compact JWE (expected 5 dot-separated parts, got {len(parts)})")
    return parts


def _decoded(text: str, what: str) -> bytes:
    try:
        return url_decode(text, what)
    except MalformedRequestError as exc:
        raise PinError(f"JWE {exc.detail}") from None


def _str_member(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise PinError(f"JWE header {where}.{name} is missing or not a string")
    return value


def read_header(jwe: str) -> PinHeader:
    """The pin's part of the protected header, checked for this pin and algorithm (nothing is trusted yet)."""
    try:
        header = json.loads(_decoded(_parts(jwe)[0], "protected header"))
    except ValueError:
        raise PinError("JWE protected header is not JSON") from None
    if not isinstance(header, dict):
        raise PinError("JWE protected header is not a JSON object")
    clevis = header.get("clevis")
    if not isinstance(clevis, dict) or clevis.get("pin") != PIN:
        raise PinError(f"JWE pin mismatch: clevis.pin is {clevis.get('pin') if isinstance(clevis, dict) else None!r}, not {PIN!r}")
    if header.get("alg") != ALG or header.get("enc") != ENC or "zip" in header:
        raise PinError(f"JWE uses alg {header.get('alg')!r} enc {header.get('enc')!r}; this pin reads only {ALG} + {ENC}")
    if PIN not in clevis and "servers" in clevis:
        return _latchset_header(clevis)
    config = clevis.get(PIN)
    if not isinstance(config, dict):
        raise PinError(f"JWE header clevis.{PIN} is missing or not an object")
    cdh = config.get("cdh")
    if cdh is not None and not isinstance(cdh, str):
        raise PinError(f"JWE header clevis.{PIN}.cdh is not a string")
    where = f"clevis.{PIN}"
    return PinHeader(_str_member(config, "url", where), _str_member(config, "path", where), cdh, _str_member(header, "kid", "protected"))


def _latchset_header(clevis: dict[str, Any]) -> PinHeader:
    servers = clevis.get("servers")
    if not isinstance(servers, list) or not servers or not all(isinstance(s, dict) and isinstance(s.get("url"), str) for s in servers):
        raise PinError("JWE header clevis.servers is not a non-empty list of {\"url\": ...} objects")
    return PinHeader(servers[0]["url"], _str_member(clevis, "path", "clevis"), None, None, LATCHSET)


def decrypt(jwe: str, key: bytes, header: PinHeader) -> bytes:
    """The plaintext, after checking `key` is the one the JWE names (when it names one) and the GCM tag holds."""
    if header.kid is not None and thumbprint(key) != header.kid:
        raise PinError(f"the key the KBS holds at {header.path} is not the one this JWE was made with "
                       "(the path was bound again since, or the JWE was altered)")
    protected, encrypted_key, iv_text, ct_text, tag_text = _parts(jwe)
    if encrypted_key:
        raise PinError("JWE has an encrypted key, which alg dir forbids")
    iv, tag = _decoded(iv_text, "iv"), _decoded(tag_text, "tag")
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise PinError("JWE iv or tag has the wrong length for A256GCM")
    try:
        return AESGCM(key).decrypt(iv, _decoded(ct_text, "ciphertext") + tag, protected.encode("ascii"))
    except InvalidTag:
        raise PinError("JWE integrity check failed: it was altered or damaged") from None
