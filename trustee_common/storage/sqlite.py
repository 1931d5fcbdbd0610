"""SQLite `KeyValueStore`: the embedded default, no server needed.

One table `kv(namespace, key, value, expires_at)`. Each call is one
transaction, run in a worker thread so the event loop never blocks on disk.
WAL journal and `synchronous=FULL`: an acknowledged write survives a crash.

`durable=False` (the KBS session store, `docs/storage.md`) trades that for
speed: `synchronous=NORMAL` (no fsync per commit; a crash of the machine
may lose the last commits, a crash of the process loses nothing) and each
call first runs on the event loop through a second connection that never
waits for a lock; only when another process holds the write lock does the
call go to a worker thread that waits as usual. Transactions stay
`BEGIN IMMEDIATE`, so `pop` remains atomic across processes sharing the file.

Single-key reads (`get`), durable or not, run on the event loop through a
third connection in autocommit mode: in WAL mode a reader sees the last
committed state and never waits for a writer, so no thread hand-off is
needed; only a busy file (WAL recovery) sends the read to a worker thread.

Space is given back: new files are created with `auto_vacuum=INCREMENTAL`,
an existing file without it is converted once at open (one `VACUUM`), and
each purge that removed rows runs `incremental_vacuum` and truncates the WAL,
so the file shrinks again after a burst of expired sessions. Expired rows
are found through a partial index on `expires_at` and deleted in batches
(`PURGE_BATCH`), so a purge of 100,000 sessions never holds the loop or the
write lock for long.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from trustee_common.errors import StorageError
from trustee_common.storage.base import Entry, validate_items, validate_key, validate_namespace

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv(expires_at) WHERE expires_at IS NOT NULL
"""


_INCREMENTAL = 2
#: Rows deleted per purge transaction.
PURGE_BATCH = 1000
_PURGE = (
    "DELETE FROM kv WHERE rowid IN "
    "(SELECT rowid FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)"
)


#: How long opening a store keeps retrying set-up statements that another process opening it holds up.
OPEN_RETRY_SECONDS = 30.0
_OPEN_RETRY_DELAY = 0.02


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLite reports the file locked or busy (another connection holds it): worth waiting for."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _set_up(conn: sqlite3.Connection, synchronous: str, *extra: str) -> None:
    """auto_vacuum, WAL and `synchronous` on `conn`, then the schema (and `extra` scripts).

    Processes opening the same new file at once (the workers of one server) race for the switch to WAL,
    and SQLite answers the loser `database is locked` at once instead of waiting its busy timeout:
    the set-up is retried until it passes or `OPEN_RETRY_SECONDS` have gone by. Every step is idempotent.
    """
    deadline = time.monotonic() + OPEN_RETRY_SECONDS
    while True:
        try:
            _enable_auto_vacuum(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.executescript(";\n".join((_SCHEMA, *extra)))
            return
        except sqlite3.Error as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_OPEN_RETRY_DELAY)


def _enable_auto_vacuum(conn: sqlite3.Connection) -> None:
    """`auto_vacuum=INCREMENTAL`; takes effect on a new file at once, on an existing one after `VACUUM`."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        return
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        conn.execute("VACUUM")  # an existing file: rewrite it once so the setting applies


#: Records the one-time fill of a new store (`import_once`); a store holding a row here is never filled again.
_IMPORT_TABLE = "CREATE TABLE IF NOT EXISTS trustee_import (source TEXT NOT NULL, imported_at REAL NOT NULL, entries INTEGER NOT NULL)"
#: How long a process waits for another one that is filling the same new store.
IMPORT_LOCK_SECONDS = 300.0
#: One row to import: namespace, key, value (no expiry).
ImportRow = tuple[str, str, bytes]


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (SQLite gives its -wal/-shm files the same mode)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def import_once(path: Path, source: str, read: Callable[[], list[ImportRow]]) -> list[ImportRow] | None:
    """Fill the store at `path` with `read()`'s rows if it is new: it holds no entry and was never filled.

    Returns the rows written, or None when the store was not new (`read` is then not called). The check,
    `read()` and the writes are one `BEGIN IMMEDIATE` transaction, so of several processes opening the same
    new file exactly one fills it (the others wait, then find it filled), and a failure (in `read` too)
    leaves the store new: the next start tries again. The file gets the same settings as `SqliteStore`'s,
    and mode 0600 when created here.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=IMPORT_LOCK_SECONDS)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open SQLite store {path}: {exc}") from exc
    try:
        _set_up(conn, "FULL", _IMPORT_TABLE)
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM trustee_import UNION ALL SELECT 1 FROM kv LIMIT 1").fetchone() is not None:
            return None
        rows = read()
        conn.executemany("INSERT OR REPLACE INTO kv(namespace, key, value, expires_at) VALUES (?,?,?,NULL)", rows)
        conn.execute("INSERT INTO trustee_import(source, imported_at, entries) VALUES (?,?,?)", (source, time.time(), len(rows)))
        conn.execute("COMMIT")
        return rows
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite store {path}: {exc}") from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


_UPSERT = "INSERT OR REPLACE INTO kv(namespace, key, value, expires_at) VALUES (?,?,?,?)"


class _BusyError(Exception):
    """The inline connection found the database locked by another process."""


class SqliteStore:
    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        synchronous = "FULL" if durable else "NORMAL"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            _set_up(self._conn, synchronous)
            self._inline: sqlite3.Connection | None = None
            if not durable:
                self._inline = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=0)
                self._inline.execute(f"PRAGMA synchronous={synchronous}")
            self._reader = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=0)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if conn is self._inline and _is_busy(exc):
                raise _BusyError from None
            raise StorageError(f"SQLite store {self.path}: {exc}") from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._inline is not None:
            try:
                return self._transaction(self._inline, fn)  # on the loop: no fsync, no lock wait
            except _BusyError:
                pass  # another process writes: wait for it in a thread

        return await asyncio.to_thread(self._locked, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read-only `fn`: on the loop through the reader connection (WAL readers never wait for writers),
        in a worker thread only when SQLite reports the file busy (e.g. WAL recovery by another process)."""
        try:
            return fn(self._reader)
        except sqlite3.Error as exc:
            if not _is_busy(exc):
                raise StorageError(f"SQLite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(self._locked, fn)

    @staticmethod
    def _live(conn: sqlite3.Connection, namespace: str, key: str) -> bytes | None:
        row = conn.execute(
            "SELECT value FROM kv WHERE namespace=? AND key=? AND (expires_at IS NULL OR expires_at > ?)",
            (namespace, key, time.time()),
        ).fetchone()
        return None if row is None else bytes(row[0])

    async def get(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        return await self._read(lambda c: self._live(c, namespace, key))

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        validate_key(namespace, key)

        def op(conn: sqlite3.Connection) -> bool:
            if not overwrite and self._live(conn, namespace, key) is not None:
                return False
            conn.execute(
                _UPSERT,
                (namespace, key, bytes(value), expires_at),
            )
            return True

        return await self._run(op)

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        validate_items(namespace, items)
        rows = [(namespace, key, bytes(value), expires_at) for key, value, expires_at in items]
        await self._run(lambda c: c.executemany(_UPSERT, rows))

    async def delete(self, namespace: str, key: str) -> bool:
        validate_key(namespace, key)
        return await self._run(lambda c: c.execute("DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key)).rowcount > 0)

    async def pop(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)

        def op(conn: sqlite3.Connection) -> bytes | None:
            value = self._live(conn, namespace, key)
            conn.execute("DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key))
            return value

        return await self._run(op)

    async def list_keys(self, namespace: str) -> list[str]:
        validate_namespace(namespace)
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM kv WHERE namespace=? AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                (namespace, time.time()),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._run(op)

    async def purge_expired(self) -> int:
        """Delete expired entries in batches of `PURGE_BATCH` rows, each its own short transaction in a worker
        thread, so requests (on the loop, or waiting for the write lock) are served between batches."""
        now = time.time()
        purged = 0
        while True:
            deleted = await asyncio.to_thread(self._locked, lambda c: c.execute(_PURGE, (now, PURGE_BATCH)).rowcount)
            purged += int(deleted)
            if deleted < PURGE_BATCH:
                break
        if purged:
            await asyncio.to_thread(self._reclaim)
        return purged

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return self._transaction(self._conn, fn)

    def _reclaim(self) -> None:
        """Give the free pages back to the file system (outside any transaction)."""
        with self._lock:
            try:
                # executescript steps the pragma to completion (execute frees a single page).
                self._conn.executescript("PRAGMA incremental_vacuum;")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite store {self.path}: reclaiming space failed: {exc}") from exc

    async def namespaces(self) -> list[str]:
        return await self._run(lambda c: [str(r[0]) for r in c.execute("SELECT DISTINCT namespace FROM kv ORDER BY namespace")])

    async def entries(self, namespace: str) -> list[Entry]:
        def op(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                "SELECT key, value, expires_at FROM kv WHERE namespace=? AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                (namespace, time.time()),
            ).fetchall()
            return [Entry(str(k), bytes(v), None if e is None else float(e)) for k, v, e in rows]

        return await self._run(op)

    async def close(self) -> None:
        with self._lock:
            if self._inline is not None:
                self._inline.close()
            self._reader.close()
            self._conn.close()
