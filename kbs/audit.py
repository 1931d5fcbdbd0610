"""The KBS's audit sink: the configured `AuditLog`, or nothing when `[audit] path` is not set.

Two ways to record (docs/audit.md, "When the audit log cannot be written"):
`must` raises `StorageError` when the event cannot be written, for events
that must exist before the action takes effect (a resource leaving the
KBS, an admin change being reported as done); `best_effort` logs and
counts the failure and lets the request go on, for denials and
attestation results (which release nothing by themselves).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trustee_common.audit import AuditLog
from trustee_common.requestid import current_request_id


class KbsAudit:
    def __init__(self, log: AuditLog | None = None) -> None:
        self.log = log

    def _stamp(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return {"service": "kbs", "request_id": current_request_id(), **event}

    def must(self, event: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.record(self._stamp(event))

    def best_effort(self, event: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.record_or_log(self._stamp(event))
