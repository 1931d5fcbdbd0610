"""RCAR session state (trustee-server.md 2.3): pure values, codec and checks.

A session is created `Authed` by `/auth` (holding the request and the
challenge) and becomes `Attested` (holding the token) after one successful
`/attest`. Its lifetime is fixed at `/auth`. An `Attested` session also
keeps the token's claims as the KBS verified them at `/attest` (None if
that verification failed), so a cookie request need not verify the JWT
again; they are written only by the KBS, never taken from a client. The stored JSON is upstream's
externally tagged enum: `{"Authed": {...}}` / `{"Attested": {...}}` with an
RFC 3339 `timeout`. Nothing here touches storage or the clock: callers pass
`now` and the random source.
"""

from __future__ import annotations

import datetime
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trustee_common.b64 import std_encode
from trustee_common.errors import AttestationError, MalformedRequestError
from trustee_common.messages import Challenge, Request

SESSION_NAMESPACE = "kbs_protocol_session"
COOKIE_NAME = "kbs-session-id"
NONCE_BYTES = 32
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class AuthedSession:
    id: str
    request: Request
    challenge: Challenge
    expires_at: float


@dataclass(frozen=True)
class AttestedSession:
    id: str
    token: str
    expires_at: float
    #: The claims the KBS verified at `/attest` (signature and chain), None if it could not.
    claims: dict[str, Any] | None = None


Session = AuthedSession | AttestedSession


def new_session(request: Request, *, now: float, lifetime: float, random_bytes: RandomBytes, extra_params: Any = "") -> AuthedSession:
    """A fresh session: UUIDv4 id in simple form and a 32-byte standard-base64 nonce; the challenge's
    `extra_params` are upstream's `""` unless the attestation backend chose otherwise (ITA's hash algorithm)."""
    session_id = uuid.UUID(bytes=random_bytes(16), version=4).hex
    challenge = Challenge(nonce=std_encode(random_bytes(NONCE_BYTES)), extra_params=extra_params)
    # Keep only what the handshake needs: the version and tee are short validated
    # values; the client's extra-params (unused) are not stored for the session's lifetime.
    stored = Request(request.version, request.tee, "")
    return AuthedSession(session_id, stored, challenge, now + lifetime)


def attested(session: AuthedSession, token: str, claims: dict[str, Any] | None = None) -> AttestedSession:
    """The session after a successful attestation; its expiry is not extended."""
    return AttestedSession(session.id, token, session.expires_at, claims)


def check_session_id(value: str | None) -> str:
    """The cookie value if it has the session-id shape; else `AttestationError`."""
    if value is None:
        raise AttestationError("RCAR handshake Attest failed: no kbs-session-id cookie (call /auth first)")
    if not _SESSION_ID.fullmatch(value):
        raise AttestationError("RCAR handshake Attest failed: malformed kbs-session-id cookie")
    return value


def is_expired(session: Session, now: float) -> bool:
    return now >= session.expires_at


def check_nonce(session: AuthedSession, nonce: str) -> None:
    """Constant-time comparison of the echoed nonce with the session's."""
    if not hmac.compare_digest(session.challenge.nonce.encode(), nonce.encode()):
        raise AttestationError("RCAR handshake Attest failed: runtime-data.nonce does not match the session challenge")


def encode_session(session: Session) -> bytes:
    timeout = _rfc3339(session.expires_at)
    if isinstance(session, AuthedSession):
        body = {"request": session.request.to_json(), "challenge": session.challenge.to_json(), "id": session.id, "timeout": timeout}
        return json.dumps({"Authed": body}, separators=(",", ":")).encode()
    body = {"token": session.token, "id": session.id, "timeout": timeout}
    if session.claims is not None:
        body["claims"] = session.claims
    return json.dumps({"Attested": body}, separators=(",", ":")).encode()


def decode_session(raw: bytes) -> Session:
    """Parse a stored session; anything unexpected is an `AttestationError` (fail closed)."""
    try:
        value = json.loads(raw)
        if "Authed" in value:
            body = value["Authed"]
            request = Request.from_json(body["request"])
            challenge = Challenge.from_json(body["challenge"])
            return AuthedSession(str(body["id"]), request, challenge, _parse_rfc3339(body["timeout"]))
        body = value["Attested"]
        claims = body.get("claims")
        if not isinstance(body["token"], str) or not (claims is None or isinstance(claims, dict)):
            raise TypeError("token")
        return AttestedSession(str(body["id"]), body["token"], _parse_rfc3339(body["timeout"]), claims)
    except (ValueError, KeyError, TypeError, MalformedRequestError):
        raise AttestationError("stored session is not readable") from None


def _rfc3339(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


def _parse_rfc3339(text: object) -> float:
    if not isinstance(text, str):
        raise TypeError("timeout")
    return datetime.datetime.fromisoformat(text).timestamp()
