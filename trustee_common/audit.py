"""The append-only audit log: one JSON object per line, written through an `O_APPEND` descriptor.

The file is opened once with `O_WRONLY | O_APPEND | O_CREAT` (mode 0600)
and never truncated, rewritten or rotated by the service: every event is
appended with a single `write(2)` of one complete line, so the kernel
places it at the end of the file even when an operator's tool (or another
process) appends too, and a crash of the service never loses an event that
was recorded (it is in the page cache). `fsync` decides when the file is
forced to disk, i.e. what a power loss can cost:

- `always`: after every event (slowest; the request waits for the disk);
- `interval` (default): at most `fsync_interval_seconds` after an event,
  from a background task, off the event loop;
- `never`: whenever the kernel writes it back.

A failed write (disk full, I/O error) raises `StorageError` after logging
the complete event at ERROR level in the service log and counting it in
`failures`, so the event is never silently lost; the caller decides
whether the request fails (see docs/audit.md). Rotate by renaming the file
and sending nothing: the service keeps appending to the renamed file until
it restarts, which loses nothing (copy-truncate is not supported).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, StorageError
from trustee_common.requestid import current_request_id

logger = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_FSYNC = "interval"
DEFAULT_FSYNC_INTERVAL = 1.0
FILE_MODE = 0o600


@dataclass(frozen=True)
class AuditConfig:
    path: Path
    fsync: str = DEFAULT_FSYNC
    fsync_interval_seconds: float = DEFAULT_FSYNC_INTERVAL


def audit_config(table: ConfigTable, base: Path, where: str = "audit") -> AuditConfig:
    """`[audit]`: `path` (relative to `base`, the config file's folder), `fsync`, `fsync_interval_seconds`."""
    path = Path(table.required_string("path"))
    fsync = table.string("fsync", DEFAULT_FSYNC) or DEFAULT_FSYNC
    interval = table.number("fsync_interval_seconds", DEFAULT_FSYNC_INTERVAL, minimum_exclusive=0.0)
    table.finish()
    if fsync not in FSYNC_POLICIES:
        raise ConfigError(f"{where}.fsync {fsync!r} is not one of {', '.join(FSYNC_POLICIES)}")
    return AuditConfig(path if path.is_absolute() else base / path, fsync, interval)


def _is_device(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def utc_timestamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_line(event: Mapping[str, Any], now: float) -> bytes:
    """One complete line: `{"ts": ..., **event}` as compact JSON plus a newline."""
    text = json.dumps({"ts": utc_timestamp(now), **event}, separators=(",", ":"), ensure_ascii=True, sort_keys=False, default=str)
    return text.encode("ascii") + b"\n"


class AuditLog:
    """Append events to one file; `on_failure` is called (e.g. a metric) for each event that could not be written."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        on_failure: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"audit.fsync {config.fsync!r} is not one of {', '.join(FSYNC_POLICIES)}")
        try:
            config.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"audit.path: cannot open {config.path} for appending: {exc.strerror}") from None
        mode = os.fstat(self._fd).st_mode
        if mode & 0o077 and not _is_device(mode):
            logger.warning("audit log %s is readable or writable by others (mode %o); 0600 is recommended", config.path, mode & 0o777)
        self.config = config
        self._on_failure = on_failure
        self._clock = clock
        self._dirty = False
        self._closed = False
        self._fd_lock = threading.Lock()  # fsync runs in a worker thread; close must not race it
        self.failures = 0

    def record(self, event: Mapping[str, Any]) -> None:
        """Append `event`; `StorageError` (after an ERROR log line holding the event) when it cannot be written."""
        line = event_line(event, self._clock())
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(0, f"short write ({written} of {len(line)} bytes)")
            if self.config.fsync == "always":
                os.fsync(self._fd)
            else:
                self._dirty = True
        except OSError as exc:
            self.failures += 1
            self._on_failure()
            reason = exc.strerror or str(exc)
            logger.error("audit log write to %s failed (%s); the event was: %s", self.config.path, reason, line.decode().rstrip())
            raise StorageError("the audit log cannot be written") from None

    def record_or_log(self, event: Mapping[str, Any]) -> None:
        """`record`, for events whose loss must not fail the request (the failure is logged and counted)."""
        try:
            self.record(event)
        except StorageError:
            pass

    def sync(self) -> None:
        with self._fd_lock:
            if not self._dirty or self._closed:
                return
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:
                logger.error("audit log fsync of %s failed: %s", self.config.path, exc.strerror)

    async def run_syncer(self) -> None:
        """Background task for `fsync = "interval"` (returns at once for the other policies)."""
        if self.config.fsync != "interval":
            return
        while True:
            await asyncio.sleep(self.config.fsync_interval_seconds)
            if self._dirty:
                await asyncio.to_thread(self.sync)

    def close(self) -> None:
        if self.config.fsync != "never":
            self.sync()
        with self._fd_lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)


class AuditSink:
    """A service's audit events: stamped with `service` and the current request id; nothing when no log is configured.

    `must` raises `StorageError` when the event cannot be written (for events
    that must exist before an action is reported done); `best_effort` logs
    and counts the failure and lets the request go on.
    """

    def __init__(self, log: AuditLog | None = None, service: str = "") -> None:
        self.log = log
        self.service = service

    def _stamp(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return {"service": self.service, "request_id": current_request_id(), **event}

    def must(self, event: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.record(self._stamp(event))

    def best_effort(self, event: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.record_or_log(self._stamp(event))


@contextlib.asynccontextmanager
async def running_audit_log(config: AuditConfig | None, *, on_failure: Callable[[], None] = lambda: None) -> AsyncIterator[AuditLog | None]:
    """Open the log (None when not configured), run its fsync task, and close it at the end."""
    if config is None:
        yield None
        return
    log = AuditLog(config, on_failure=on_failure)
    logger.info("audit log: %s (fsync %s)", config.path, config.fsync)
    syncer = asyncio.create_task(log.run_syncer())
    try:
        yield log
    finally:
        syncer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncer
        log.close()
