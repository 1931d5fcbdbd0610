"""Pieces shared by every service's audit events (pure): clipping, digests, reasons, admin changes.

No event holds a secret or unbounded client text: contents appear as
`{"sha256", "bytes"}`, client-supplied strings are cut to `MAX_TEXT`
characters. docs/audit.md lists every event and field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from trustee_common.errors import TrusteeError

MAX_TEXT = 256


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def reason(error: TrusteeError) -> dict[str, str]:
    return {"type": error.variant, "detail": clip(error.detail)}


def change_event(
    action: str,
    outcome: str,
    origin: Mapping[str, Any],
    *,
    target: Mapping[str, Any] | None = None,
    content: Mapping[str, Any] | None = None,
    error: TrusteeError | None = None,
) -> dict[str, Any]:
    """An `admin` event of a gRPC write API (AS policies, RVPS values); `outcome`: `ok` or `failed`."""
    event: dict[str, Any] = {"event": "admin", "action": action, "outcome": outcome, **origin}
    if target:
        event["target"] = {key: clip(value) if isinstance(value, str) else value for key, value in target.items()}
    if content is not None:
        event["content"] = dict(content)
    if error is not None:
        event["reason"] = reason(error)
    return event
