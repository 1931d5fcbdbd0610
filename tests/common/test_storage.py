"""One contract, run against every KeyValueStore backend; and the resource directory."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustee_common.errors import MalformedRequestError, StorageError
from trustee_common.storage.base import KeyValueStore
from trustee_common.storage.directory import DirectoryResourceStore
from trustee_common.storage.memory import MemoryStore
from trustee_common.storage.sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    backend: KeyValueStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "kv.sqlite3")
    yield backend
    await backend.close()


async def test_put_get_delete(store: KeyValueStore) -> None:
    assert await store.get("kbs", "a/b") is None
    assert await store.put("kbs", "a/b", b"one")
    assert await store.get("kbs", "a/b") == b"one"
    assert await store.get("repository", "a/b") is None
    assert await store.delete("kbs", "a/b")
    assert not await store.delete("kbs", "a/b")


async def test_put_without_overwrite_keeps_the_old_value(store: KeyValueStore) -> None:
    await store.put("kbs", "k", b"old")
    assert not await store.put("kbs", "k", b"new", overwrite=False)
    assert await store.get("kbs", "k") == b"old"
    assert await store.put("kbs", "k", b"new")
    assert await store.get("kbs", "k") == b"new"


async def test_expired_entries_are_invisible_and_purged(store: KeyValueStore) -> None:
    await store.put("kbs_protocol_session", "gone", b"x", expires_at=time.time() - 1)
    await store.put("kbs_protocol_session", "live", b"y", expires_at=time.time() + 60)
    assert await store.get("kbs_protocol_session", "gone") is None
    assert await store.list_keys("kbs_protocol_session") == ["live"]
    assert await store.put("kbs_protocol_session", "gone", b"z", overwrite=False)
    await store.put("kbs_protocol_session", "old", b"x", expires_at=time.time() - 1)
    assert await store.purge_expired() == 1


async def test_pop_hands_a_value_to_exactly_one_caller(store: KeyValueStore) -> None:
    await store.put("kbs_protocol_session", "s", b"nonce")
    results = await asyncio.gather(*(store.pop("kbs_protocol_session", "s") for _ in range(8)))
    assert sorted(r for r in results if r is not None) == [b"nonce"]
    assert await store.get("kbs_protocol_session", "s") is None


async def test_list_keys_is_sorted_per_namespace(store: KeyValueStore) -> None:
    for key in ("b", "a/c", "a"):
        await store.put("reference_value", key, b"1")
    await store.put("kbs", "z", b"1")
    assert await store.list_keys("reference_value") == ["a", "a/c", "b"]


@pytest.mark.parametrize("key", ["", ".hidden", "/abs", "a/../b", "sp ace", "x" * 600])
async def test_bad_keys_are_refused(store: KeyValueStore, key: str) -> None:
    with pytest.raises(MalformedRequestError):
        await store.put("kbs", key, b"1")


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "kv.sqlite3")
    await first.put("kbs", "k", b"kept")
    await first.close()
    second = SqliteStore(tmp_path / "kv.sqlite3")
    assert await second.get("kbs", "k") == b"kept"
    await second.close()


async def test_sqlite_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot open"):
        SqliteStore(tmp_path / "file" / "kv.sqlite3")


async def test_directory_store_serves_dropped_files_and_writes_atomically(tmp_path: Path) -> None:
    repo = DirectoryResourceStore(tmp_path)
    (tmp_path / "default" / "key").mkdir(parents=True)
    (tmp_path / "default" / "key" / "dropped").write_bytes(b"by hand")
    assert await repo.read("default/key/dropped") == b"by hand"
    await repo.write("default/key/new", b"v1")
    await repo.write("default/key/new", b"v2")
    assert await repo.read("default/key/new") == b"v2"
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "default" / "key").iterdir())
    assert await repo.list() == ["default/key/dropped", "default/key/new"]
    assert await repo.delete("default/key/new")
    assert await repo.read("default/key/new") is None


@pytest.mark.parametrize("path", ["a/b", "a/b/c/d", "../b/c", "a/.b/c", "a//c", "a/b/c d"])
async def test_directory_store_refuses_bad_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(MalformedRequestError):
        await DirectoryResourceStore(tmp_path).read(path)
