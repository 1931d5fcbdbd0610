"""Compact JWS (JWT) parsing, signature and time-claim checks shared by EAR and admin tokens.

`parse_compact` decodes the header and claims strictly (base64url without
padding, JSON objects, no `crit`, no `NaN`/`Infinity` literals, no
number that overflows to infinity and no duplicate member names, which
other JSON parsers would resolve differently), `verify_signature` checks the
signature with jwcrypto for one fixed algorithm (`verify_es256` checks
ES256 with a direct `cryptography` ECDSA call: raw 64-byte r||s, RFC 7518
3.4), and `check_time_claims`
enforces the time claims at an explicit `now`:

* `exp` is required; `nbf` and `iat` are optional. Each present one must
  be a JSON number (not a boolean, string or null), finite, and within
  `0 ... MAX_TIMESTAMP` (year 9999), else the token is refused.
* `now > exp + leeway` is expired, `now + leeway < nbf` is not yet valid
  and `iat > now + leeway` is issued in the future; the leeway is
  `TIME_LEEWAY_SECONDS` (60 s, upstream's `exp` leeway) for all three.

Errors are raised as the `TrusteeError` class the caller names, so token
and admin failures keep their own variants. Which key to trust is not
decided here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError, TrusteeError, clip_repr

#: Clock-skew allowance for `exp`, `nbf` and `iat` (upstream's jsonwebtoken default for `exp`).
TIME_LEEWAY_SECONDS = 60
#: 9999-12-31T23:59:59Z: later time claims are refused as out of range.
MAX_TIMESTAMP = 253_402_300_799
MAX_TOKEN_LENGTH = 128 * 1024


@dataclass(frozen=True)
class CompactJws:
    text: str
    header: dict[str, Any]
    claims: dict[str, Any]


class _NonFiniteNumberError(ValueError):
    pass


class _DuplicateMemberError(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFiniteNumberError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFiniteNumberError(f"number {text[:32]} is out of range")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMemberError("duplicate member name")
    return result


def strict_json_loads(data: bytes) -> Any:
    """`json.loads` without `NaN`/`Infinity`, overflow to infinity or duplicate member names."""
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_members)


def _json_object(segment: str, what: str, error: type[TrusteeError]) -> dict[str, Any]:
    try:
        value = strict_json_loads(url_decode(segment, what))
    except _NonFiniteNumberError:
        raise error(f"token {what} holds a non-finite number") from None
    except _DuplicateMemberError:
        raise error(f"token {what} repeats a member name") from None
    except (MalformedRequestError, ValueError, RecursionError):
        raise error(f"token {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise error(f"token {what} is not a JSON object")
    return value


def parse_compact(token: str, error: type[TrusteeError], header: dict[str, Any] | None = None) -> CompactJws:
    """Split `header.payload.signature` and decode the two JSON objects.

    `header`: the header of this token's first segment as an earlier call
    decoded and checked it (a caller's cache keyed by that segment's text: a
    signer's header, with its `x5c` chain, repeats in every token it issues);
    it is shared and must not be changed."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise error("token is too long")
    parts = token.split(".")
    if len(parts) != 3 or not parts[2]:
        raise error("token is not a compact JWS")
    if header is None:
        header = _json_object(parts[0], "header", error)
        if "crit" in header or header.get("b64") is False:
            raise error("token header uses unsupported critical parameters")
    return CompactJws(token, header, _json_object(parts[1], "payload", error))


def verify_signature(token: CompactJws, key: jwk.JWK, alg: str, error: type[TrusteeError]) -> None:
    """Raise `error` unless the header names `alg` and the signature verifies under `key`."""
    if token.header.get("alg") != alg:
        raise error(f"token alg {clip_repr(token.header.get('alg'))} is not {alg}")
    checker = jws.JWS()
    checker.allowed_algs = [alg]
    try:
        checker.deserialize(token.text)
        checker.verify(key, alg=alg)
    except (JWException, ValueError, TypeError):
        raise error("token signature does not verify") from None


ES256_COORDINATE_BYTES = 32


def verify_es256(token: CompactJws, key: ec.EllipticCurvePublicKey, error: type[TrusteeError]) -> None:
    """Raise `error` unless the header names ES256 and the r||s signature verifies under the P-256 `key`."""
    if token.header.get("alg") != "ES256":
        raise error(f"token alg {clip_repr(token.header.get('alg'))} is not ES256")
    header, payload, signature = token.text.split(".")
    try:
        raw = url_decode(signature, "signature")
    except MalformedRequestError:
        raise error("token signature does not verify") from None
    if len(raw) != 2 * ES256_COORDINATE_BYTES or not isinstance(key.curve, ec.SECP256R1):
        raise error("token signature does not verify")
    r = int.from_bytes(raw[:ES256_COORDINATE_BYTES], "big")
    s = int.from_bytes(raw[ES256_COORDINATE_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), f"{header}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise error("token signature does not verify") from None


def _timestamp(claims: dict[str, Any], name: str, error: type[TrusteeError]) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"token {name} claim is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"token {name} claim is not finite")
    if not 0 <= value <= MAX_TIMESTAMP:
        raise error(f"token {name} claim is out of range")
    return float(value)


def check_time_claims(claims: dict[str, Any], now: float, error: type[TrusteeError]) -> None:
    """`exp` required; `exp`, `nbf`, `iat` well-formed and satisfied at `now` with the leeway."""
    exp = _timestamp(claims, "exp", error)
    nbf = _timestamp(claims, "nbf", error)
    iat = _timestamp(claims, "iat", error)
    if exp is None:
        raise error("token has no exp claim")
    if now > exp + TIME_LEEWAY_SECONDS:
        raise error("token has expired")
    if nbf is not None and now + TIME_LEEWAY_SECONDS < nbf:
        raise error("token is not valid yet (nbf)")
    if iat is not None and iat > now + TIME_LEEWAY_SECONDS:
        raise error("token was issued in the future (iat)")
