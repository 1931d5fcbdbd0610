"""Audit one write call of the AS or RVPS API (policy set/delete, reference value register/delete).

`audited_change` takes the gRPC context; `audited` the caller's address, for
the AS's HTTP front end (`restful-as`).

The event names the caller by its gRPC peer address (`ipv4:127.0.0.1:51234`),
the request id (`trustee_common.requestid`), the target and a digest of the
new content; docs/audit.md. A change that was made but cannot be audited
fails the call with `StorageError`, so the caller (e.g. the KBS admin
endpoint) learns it is not on record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from trustee_common.audit import AuditSink
from trustee_common.audit_events import change_event
from trustee_common.errors import TrusteeError

T = TypeVar("T")


async def audited_change(
    audit: AuditSink,
    context: grpc.aio.ServicerContext[Any, Any],
    action: str,
    target: Mapping[str, Any],
    content: Mapping[str, Any] | None,
    change: Callable[[], Awaitable[T]],
) -> T:
    """Run `change` and audit its outcome (`ok`, or `failed` with the reason)."""
    return await audited(audit, context.peer(), action, target, content, change)


async def audited(
    audit: AuditSink,
    peer: str,
    action: str,
    target: Mapping[str, Any],
    content: Mapping[str, Any] | None,
    change: Callable[[], Awaitable[T]],
) -> T:
    """`audited_change` for a caller named by `peer` (any transport: the HTTP front end of the AS too)."""
    origin = {"peer": peer}
    try:
        result = await change()
    except TrusteeError as exc:
        audit.best_effort(change_event(action, "failed", origin, target=target, content=content, error=exc))
        raise
    audit.must(change_event(action, "ok", origin, target=target, content=content))
    return result
