"""The KBS's audit events as plain dicts (docs/audit.md lists every field).

Pure: facts in, one JSON-ready dict out; writing them is
`trustee_common.audit`. No event ever holds a secret: resource and policy
contents appear as `{"sha256", "bytes"}` digests, session ids and
attestation tokens (both bearer credentials) as the first 16 hex digits of
their SHA-256 (`*_ref`), and client-supplied text is cut to `MAX_TEXT`
characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kbs.core.jws import parse_compact
from trustee_common.audit_events import MAX_TEXT, change_event, clip, digest, reason
from trustee_common.errors import TrusteeError
from trustee_common.tee import TEE_CLASSES

__all__ = ["MAX_TEXT", "admin_event", "admin_identity", "attestation_event", "clip", "digest", "ear_summary", "reference",
           "release_event", "token_summary"]

REF_HEX = 16


def reference(secret: str) -> str:
    """A correlation handle for a bearer credential that does not reveal it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:REF_HEX]


def ear_summary(claims: Mapping[str, Any]) -> dict[str, Any]:
    """`{"tee": [...], "ear_status": {submod: status}}` from EAR claims (missing parts are left out)."""
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return {}
    tees: list[str] = []
    statuses: dict[str, str] = {}
    for name, submod in submods.items():
        if not isinstance(submod, dict):
            continue
        status = submod.get("ear.status")
        if isinstance(status, str):
            statuses[clip(str(name))] = clip(status)
        evidence = submod.get("ear.veraison.annotated-evidence")
        if isinstance(evidence, dict):
            tees.extend(key for key in evidence if key in TEE_CLASSES and key not in tees)
    return {"tee": tees, "ear_status": statuses}


def token_summary(token: str) -> dict[str, Any]:
    """`ear_summary` of a token's payload, read without verification (for tokens our own AS just issued)."""
    try:
        return ear_summary(parse_compact(token, TrusteeError).claims)
    except TrusteeError:
        return {}


def admin_identity(mode: str, role: str, claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """Who made an admin request: the mode, and for a verified token its `sub`, `iss` and `role`."""
    who: dict[str, Any] = {"mode": mode}
    if claims is None:
        return who
    for key in ("sub", "iss"):
        value = claims.get(key)
        if isinstance(value, str):
            who[key] = clip(value)
    who["role"] = clip(role)
    return who


def admin_event(
    *,
    action: str,
    method: str,
    endpoint: str,
    outcome: str,
    origin: Mapping[str, Any],
    who: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | None = None,
    content: Mapping[str, Any] | None = None,
    error: TrusteeError | None = None,
) -> dict[str, Any]:
    """`outcome`: `ok`, `denied` (authentication/authorization failed) or `failed` (refused or errored after)."""
    event = change_event(action, outcome, {**origin, "method": method, "endpoint": clip(endpoint)},
                         target=target, content=content, error=error)
    if who is not None:
        event["who"] = dict(who)
    return event


def release_event(outcome: str, origin: Mapping[str, Any], facts: Mapping[str, Any], error: TrusteeError | None = None) -> dict[str, Any]:
    """`outcome`: `released` or `denied`; `facts`: resource, tee, ear_status, policy (what was known)."""
    event: dict[str, Any] = {"event": "resource.release", "outcome": outcome, **origin, **facts}
    if error is not None:
        event["reason"] = reason(error)
    return event


def attestation_event(outcome: str, origin: Mapping[str, Any], tee: str | None, token: str | None = None,
                      error: TrusteeError | None = None, claims: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`outcome`: `attested`, `rejected` (the AS or the nonce check refused) or `error`.

    `claims`: the token's claims when the KBS has already read them (else the token is read here)."""
    event: dict[str, Any] = {"event": "attestation", "outcome": outcome, **origin, "tee": tee}
    if token is not None:
        summary = token_summary(token) if claims is None else ear_summary(claims)
        event.update({k: v for k, v in summary.items() if k != "tee"})
        event["token_ref"] = reference(token)
    if error is not None:
        event["reason"] = reason(error)
    return event
