"""The KBS's audit sink: the configured `AuditLog`, or nothing when `[audit] path` is not set.

`must` (raises `StorageError` when the event cannot be written) is for
events that must exist before the action takes effect or is reported done
(a resource leaving the KBS, an admin change); `best_effort` (logs and
counts the failure, the request goes on) for denials, reads and
attestation results, which release nothing by themselves. docs/audit.md.
"""

from __future__ import annotations

from trustee_common.audit import AuditLog, AuditSink


class KbsAudit(AuditSink):
    def __init__(self, log: AuditLog | None = None) -> None:
        super().__init__(log, "kbs")
