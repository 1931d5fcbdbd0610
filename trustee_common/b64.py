"""Strict base64 codecs.

Upstream uses a different base64 flavour per field (trustee-server.md 12.6):
policies and gRPC evidence are URL-safe without padding, nonces and RVPS
payloads are standard with padding, JWK/JWE fields are URL-safe without
padding. Each decoder accepts exactly its flavour and raises
`MalformedRequestError` naming the field otherwise.
"""

from __future__ import annotations

import base64
import binascii
import re

from trustee_common.errors import MalformedRequestError

_STD_PADDED = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
_URL_NOPAD = re.compile(r"^[A-Za-z0-9_-]*$")


def std_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def std_decode(text: str, field: str) -> bytes:
    """Standard alphabet, padding required."""
    if not _STD_PADDED.fullmatch(text):
        raise MalformedRequestError(f"{field}: not standard (padded) base64")
    return base64.b64decode(text, validate=True)


def url_encode(data: bytes) -> str:
    """URL-safe alphabet without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def url_decode_text(text: str, field: str) -> str:
    """`url_decode`, then UTF-8 (a policy as every front end carries it); `MalformedRequestError` naming `field` otherwise."""
    try:
        return url_decode(text, field).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequestError(f"{field}: not UTF-8 text") from None


def url_decode(text: str, field: str) -> bytes:
    """URL-safe alphabet, padding rejected."""
    if not _URL_NOPAD.fullmatch(text) or len(text) % 4 == 1:
        raise MalformedRequestError(f"{field}: not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequestError(f"{field}: not base64url without padding") from exc
