"""The KBS session store: `SqliteStore(durable=False)` shared by several processes.

Its calls run on the event loop through a connection that never waits for
a lock; these tests prove that a write lock held by another process makes
the call wait (in a worker thread) instead of failing, and that `pop` stays
single-use across processes, which nonce single-use relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from trustee_common.storage.sqlite import SqliteStore

NS = "kbs_protocol_session"
KEYS = 60
POPPERS = 3

_POPPER = """
import asyncio, sys
from trustee_common.storage.sqlite import SqliteStore
async def main():
    store = SqliteStore(sys.argv[1], durable=False)
    got = [k for k in (f"k{i}" for i in range(int(sys.argv[2]))) if await store.pop("kbs_protocol_session", k) is not None]
    await store.close()
    print(" ".join(got))
asyncio.run(main())
"""


def _pop_in_processes(path: Path) -> list[str]:
    """Every key popped by `POPPERS` processes running at once, as each reported it."""
    procs = [subprocess.Popen([sys.executable, "-c", _POPPER, str(path), str(KEYS)], stdout=subprocess.PIPE, text=True)
             for _ in range(POPPERS)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    return [key for output in outputs for key in output.split()]


async def test_a_write_lock_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3", durable=False)
    try:
        with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            put = asyncio.create_task(store.put(NS, "a", b"v", expires_at=time.time() + 60))
            await asyncio.sleep(0.5)
            assert not put.done()  # neither failed nor written through the lock
            other.execute("COMMIT")
        assert await asyncio.wait_for(put, 30) is True
        assert await store.get(NS, "a") == b"v"
    finally:
        await store.close()


async def test_pop_is_single_use_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path, durable=False)
    try:
        for i in range(KEYS):
            await store.put(NS, f"k{i}", b"authed", expires_at=time.time() + 300)
        taken = await asyncio.to_thread(_pop_in_processes, path)
        assert sorted(taken) == sorted(f"k{i}" for i in range(KEYS))  # each key popped exactly once
        assert await store.list_keys(NS) == []
    finally:
        await store.close()


#: Each process opens every file of the list, all starting together on each file (the workers of one server starting).
_OPENER = """
import sys, time
from pathlib import Path
from trustee_common.storage.sqlite import SqliteStore
folder, me, count, durable = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "durable"
failed = 0
for i in range(count):
    (folder / f"ready-{i}-{me}").touch()
    while len(list(folder.glob(f"ready-{i}-*"))) < int(sys.argv[5]):
        time.sleep(0.001)
    try:
        SqliteStore(folder / f"store-{i}.sqlite3", durable=durable)
    except Exception as exc:
        failed += 1
        print(f"{i}: {exc}", file=sys.stderr)
print(failed)
"""
OPENERS = 3
NEW_FILES = 60


def test_processes_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Workers starting together on a fresh data directory race for the switch to WAL; SQLite tells the losers
    `database is locked` at once (one open in ~25 failed before): every one must open the store."""
    for mode in ("sessions", "durable"):
        folder = tmp_path / mode
        folder.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", _OPENER, str(folder), str(n), str(NEW_FILES), mode, str(OPENERS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(OPENERS)]
        results = [proc.communicate(timeout=120) for proc in procs]
        assert [(proc.returncode, out.strip()) for proc, (out, _) in zip(procs, results, strict=True)] == [(0, "0")] * OPENERS, \
            [err for _, err in results]
