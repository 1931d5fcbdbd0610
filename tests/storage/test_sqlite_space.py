"""The SQLite store gives space back after expired entries are purged (a burst of /auth sessions)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from trustee_common.storage.sqlite import SqliteStore

VALUE = b"x" * (64 * 1024)
COUNT = 200


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def fill_and_purge(store: SqliteStore, path: Path) -> tuple[int, int, int]:
    await store.put("keep", "k", b"kept")
    before = on_disk(path)
    expired = time.time() - 1
    for i in range(COUNT):
        await store.put("kbs_protocol_session", f"s{i}", VALUE, expires_at=expired)
    full = on_disk(path)
    assert await store.purge_expired() == COUNT
    return before, full, on_disk(path)


async def test_file_shrinks_after_purge(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    store = SqliteStore(path)
    try:
        before, full, after = await fill_and_purge(store, path)
        assert full > COUNT * len(VALUE)
        assert after < before + 512 * 1024, (before, full, after)
        assert await store.get("keep", "k") == b"kept"
    finally:
        await store.close()


async def test_existing_file_without_auto_vacuum_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL,"
            " PRIMARY KEY (namespace, key))"
        )
        conn.execute("INSERT INTO kv VALUES ('keep', 'old', x'01', NULL)")
    conn.close()
    store = SqliteStore(path)
    try:
        assert await store.get("keep", "old") == b"\x01"
        before, full, after = await fill_and_purge(store, path)
        assert after < before + 512 * 1024, (before, full, after)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()
