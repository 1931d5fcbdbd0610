"""Compact JWS (JWT) parsing and signature checks shared by token and admin verification.

`parse_compact` decodes the header and claims strictly (base64url without
padding, JSON objects, no `crit`), `verify_signature` checks the signature
with jwcrypto for one fixed algorithm, and `check_expiry` enforces a
required `exp` with leeway at an explicit `now`. Errors are raised as the
`TrusteeError` class the caller names, so token and admin failures keep
their own variants. Which key to trust is not decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from trustee_common.b64 import url_decode
from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError, TrusteeError, clip_repr

#: `exp` is checked with this leeway, as upstream's jsonwebtoken default.
EXPIRY_LEEWAY_SECONDS = 60
MAX_TOKEN_LENGTH = 128 * 1024


@dataclass(frozen=True)
class CompactJws:
    text: str
    header: dict[str, Any]
    claims: dict[str, Any]


def _json_object(segment: str, what: str, error: type[TrusteeError]) -> dict[str, Any]:
    try:
        value = loads_json(url_decode(segment, what), what)
    except MalformedRequestError:
        raise error(f"token {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise error(f"token {what} is not a JSON object")
    return value


def parse_compact(token: str, error: type[TrusteeError]) -> CompactJws:
    """Split `header.payload.signature` and decode the two JSON objects."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise error("token is too long")
    parts = token.split(".")
    if len(parts) != 3 or not parts[2]:
        raise error("token is not a compact JWS")
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


def check_expiry(claims: dict[str, Any], now: float, error: type[TrusteeError]) -> None:
    """`exp` is required, numeric, and not older than `now - leeway`."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise error("token has no numeric exp claim")
    if now > exp + EXPIRY_LEEWAY_SECONDS:
        raise error("token has expired")
