"""Opening a flattened JWE (RFC 7516) to an EC TEE key with direct `cryptography` calls.

The guest opens one JWE per resource; jwcrypto took ~0.45 ms for it, most
of it its own object machinery around the same primitives. This module
handles exactly the envelopes a KBS sends to an EC key (ours and
upstream's, `trustee_common.jwe_encrypt`): members `protected`,
`encrypted_key`, `iv`, `ciphertext`, `tag` (and optionally `aad`, and a
per-recipient unprotected `header`, where jwcrypto and joserfc put `epk`),
header parameters `alg` ECDH-ES+A256KW, `enc` A256GCM, `epk` on the key's
curve (and optionally `kid`, `typ`, `cty`). The steps are RFC 7518 4.6 and
5.3: ECDH with `epk` (whose point `cryptography` checks is on the curve),
Concat KDF over SHA-256 (AlgorithmID "ECDH-ES+A256KW", empty PartyUInfo
and PartyVInfo, 256 bits), AES key unwrap (RFC 3394, integrity-checked),
AES-256-GCM with the base64url protected header (`.aad`) as AAD.

`open_ec` answers None for any other shape (another algorithm, `apu`/`apv`,
`zip`, `crit`, unprotected headers, several recipients, base64 with padding):
the caller then uses the general library. An envelope of this shape that
does not open raises `ValueError` naming the step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError
from trustee_common.jwe_encrypt import CEK_BYTES, CONTENT_ENCRYPTION, EC_ALG, IV_BYTES, TAG_BYTES, ecdh_es_a256kw_kek

_MEMBERS = frozenset({"protected", "encrypted_key", "iv", "ciphertext", "tag"})
_OPTIONAL_MEMBERS = frozenset({"aad", "header"})
_HEADER = frozenset({"alg", "enc", "epk", "kid", "typ", "cty"})
_EPK = frozenset({"kty", "crv", "x", "y"})
_CURVES = {"P-256": "secp256r1", "P-521": "secp521r1"}
#: A protected header larger than this is not one a KBS sends.
MAX_HEADER_BYTES = 4096


class _UnhandledError(Exception):
    """Not an envelope of the handled shape."""


def open_ec(key: ec.EllipticCurvePrivateKey, envelope: Mapping[str, Any]) -> bytes | None:
    """The plaintext; None when the envelope is not of the shape above; `ValueError` when it does not open."""
    texts = [v for k, v in envelope.items() if k != "header"]
    if not _MEMBERS <= set(envelope) <= _MEMBERS | _OPTIONAL_MEMBERS or not all(isinstance(v, str) for v in texts):
        return None
    if not isinstance(envelope.get("header", {}), dict):
        return None
    try:
        return _open(key, envelope)
    except _UnhandledError:
        return None


def _open(key: ec.EllipticCurvePrivateKey, envelope: Mapping[str, Any]) -> bytes:
    protected = envelope["protected"]
    header = _header(protected, envelope.get("header", {}))
    epk = header["epk"]
    if _CURVES.get(epk["crv"]) != key.curve.name:
        raise ValueError(f"epk is on {epk['crv']}, the TEE key on {key.curve.name}")
    size = (key.curve.key_size + 7) // 8
    x, y = _decode(epk["x"], "epk.x"), _decode(epk["y"], "epk.y")
    if len(x) != size or len(y) != size:
        raise ValueError(f"epk coordinates must be {size} bytes")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, b"\x04" + x + y)  # ValueError off the curve
    shared = key.exchange(ec.ECDH(), peer)
    kek = ecdh_es_a256kw_kek(shared)
    try:
        cek = aes_key_unwrap(kek, _decode(envelope["encrypted_key"], "encrypted_key"))
    except InvalidUnwrap:
        raise ValueError("the content key does not unwrap (wrong TEE key or a tampered encrypted_key)") from None
    iv, tag = _decode(envelope["iv"], "iv"), _decode(envelope["tag"], "tag")
    if len(cek) != CEK_BYTES or len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise ValueError(f"content key, iv and tag must be {CEK_BYTES}, {IV_BYTES} and {TAG_BYTES} bytes")
    if "aad" in envelope:
        _decode(envelope["aad"], "aad")  # base64url, as RFC 7516 7.2.1 has it
    aad = protected if "aad" not in envelope else f"{protected}.{envelope['aad']}"
    try:
        return AESGCM(cek).decrypt(iv, _decode(envelope["ciphertext"], "ciphertext") + tag, aad.encode("ascii"))
    except InvalidTag:
        raise ValueError("the content does not decrypt (tampered ciphertext, iv, tag or header)") from None


def _header(protected: str, unprotected: dict[str, Any]) -> dict[str, Any]:
    """The protected header joined with the unprotected one, when they are of the handled shape."""
    if len(protected) > MAX_HEADER_BYTES:
        raise _UnhandledError
    try:
        header = json.loads(_decode(protected, "protected"))
    except (ValueError, UnicodeDecodeError):
        raise _UnhandledError from None  # let the general library name what is wrong with it
    if not isinstance(header, dict) or set(header) & set(unprotected):  # RFC 7516 7.2.1: disjoint
        raise _UnhandledError
    header = {**header, **unprotected}
    if not set(header) <= _HEADER:
        raise _UnhandledError
    if header.get("alg") != EC_ALG or header.get("enc") != CONTENT_ENCRYPTION:
        raise _UnhandledError
    epk = header.get("epk")
    if not isinstance(epk, dict) or set(epk) != _EPK or epk["kty"] != "EC" or not all(isinstance(v, str) for v in epk.values()):
        raise _UnhandledError
    return header


def _decode(value: str, field: str) -> bytes:
    """Unpadded base64url; anything else is for the general library (which accepts padding)."""
    try:
        return url_decode(value, field)
    except MalformedRequestError:
        raise _UnhandledError from None
