"""One `KeyValueStore` contract, run against every backend.

Memory, SQLite and PostgreSQL must pass all of it. Redis passes all of it
too except the purge count: Redis expires entries itself, so its
`purge_expired` has nothing left to count. PostgreSQL and Redis are real private servers
(tests/storage/servers.py). "Two handles" are two independent store
objects on the same data, as two replicas or processes would have.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trustee_common.errors import MalformedRequestError
from trustee_common.storage.base import Entry, ExportableStore, KeyValueStore
from trustee_common.storage.memory import MemoryStore
from trustee_common.storage.postgres import PostgresStore
from trustee_common.storage.redis import RedisStore
from trustee_common.storage.sqlite import SqliteStore

DURABLE = ["memory", "sqlite", "postgres"]
SESSION = [*DURABLE, "sqlite-sessions", "redis"]
SESSIONS = "kbs_protocol_session"


@dataclass
class Backend:
    name: str
    opener: Callable[[], KeyValueStore]
    opened: list[KeyValueStore] = field(default_factory=list)

    def open(self) -> KeyValueStore:
        store = self.opener()
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


def _opener(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyValueStore]:
    if name == "memory":
        shared = MemoryStore()
        return lambda: shared
    if name == "sqlite":
        return lambda: SqliteStore(tmp_path / "kv.sqlite3")
    if name == "sqlite-sessions":  # the KBS session store: no fsync, calls inline on the loop
        return lambda: SqliteStore(tmp_path / "kv-sessions.sqlite3", durable=False)
    if name == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url, pool_size=4)
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url, pool_size=4)


async def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend(request.param, _opener(request.param, request, tmp_path))
    yield backend
    await backend.close_all()


@pytest.fixture(params=DURABLE)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _backend(request, tmp_path):
        yield backend


@pytest.fixture(params=SESSION)
async def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _backend(request, tmp_path):
        yield backend


# --- the part every backend, Redis included, must pass -----------------------------


async def test_put_get_delete(any_backend: Backend) -> None:
    store = any_backend.open()
    assert await store.get("kbs", "a/b") is None
    assert await store.put("kbs", "a/b", b"one")
    assert await store.get("kbs", "a/b") == b"one"
    assert await store.get("repository", "a/b") is None
    assert await store.delete("kbs", "a/b")
    assert not await store.delete("kbs", "a/b")
    assert await store.get("kbs", "a/b") is None


async def test_put_without_overwrite_keeps_the_old_value(any_backend: Backend) -> None:
    store = any_backend.open()
    await store.put("kbs", "k", b"old")
    assert not await store.put("kbs", "k", b"new", overwrite=False)
    assert await store.get("kbs", "k") == b"old"
    assert await store.put("kbs", "k", b"new")
    assert await store.get("kbs", "k") == b"new"


async def test_entries_expire(any_backend: Backend) -> None:
    store = any_backend.open()
    await store.put(SESSIONS, "gone", b"x", expires_at=time.time() - 1)
    await store.put(SESSIONS, "soon", b"y", expires_at=time.time() + 0.5)
    await store.put(SESSIONS, "live", b"z", expires_at=time.time() + 60)
    assert await store.get(SESSIONS, "gone") is None
    assert await store.get(SESSIONS, "soon") == b"y"
    await asyncio.sleep(0.8)
    assert await store.get(SESSIONS, "soon") is None
    assert await store.pop(SESSIONS, "soon") is None
    assert await store.list_keys(SESSIONS) == ["live"]
    assert await store.put(SESSIONS, "gone", b"again", overwrite=False)


async def test_put_many_writes_every_entry_or_none(any_backend: Backend) -> None:
    store, other = any_backend.open(), any_backend.open()
    await store.put("kbs", "old", b"before")
    later = time.time() + 60
    await store.put_many("kbs", [("a", b"1", None), ("old", b"after", later), ("gone", b"x", time.time() - 1), ("b/c", b"2", later)])
    assert [await other.get("kbs", k) for k in ("a", "old", "gone", "b/c")] == [b"1", b"after", None, b"2"]
    assert await other.list_keys("kbs") == ["a", "b/c", "old"]
    await store.put_many("kbs", [])
    with pytest.raises(MalformedRequestError, match="invalid storage key"):
        await store.put_many("kbs", [("fresh", b"1", None), ("../escape", b"2", None)])
    assert await other.get("kbs", "fresh") is None  # the bad key refused the whole batch


async def test_pop_hands_a_value_to_exactly_one_caller_across_handles(any_backend: Backend) -> None:
    first, second = any_backend.open(), any_backend.open()
    for round_ in range(10):
        await first.put(SESSIONS, "s", f"nonce-{round_}".encode(), expires_at=time.time() + 60)
        takers = [(first if i % 2 else second).pop(SESSIONS, "s") for i in range(8)]
        results = await asyncio.gather(*takers)
        assert [r for r in results if r is not None] == [f"nonce-{round_}".encode()]
        assert await second.get(SESSIONS, "s") is None


async def test_concurrent_writers_to_one_key(any_backend: Backend) -> None:
    first, second = any_backend.open(), any_backend.open()
    values = {f"v{i}".encode() for i in range(20)}
    await asyncio.gather(*((first if i % 2 else second).put("kbs", "same", v) for i, v in enumerate(sorted(values))))
    assert await first.get("kbs", "same") in values
    won = await asyncio.gather(*((first if i % 2 else second).put("kbs", "once", v, overwrite=False) for i, v in enumerate(sorted(values))))
    assert won.count(True) == 1
    assert await second.get("kbs", "once") == sorted(values)[won.index(True)]


async def test_only_one_writer_replaces_an_expired_entry(any_backend: Backend) -> None:
    first, second = any_backend.open(), any_backend.open()
    await first.put(SESSIONS, "k", b"stale", expires_at=time.time() - 1)
    won = await asyncio.gather(*((first if i % 2 else second).put(SESSIONS, "k", f"{i}".encode(), overwrite=False) for i in range(10)))
    assert won.count(True) == 1
    assert await first.get(SESSIONS, "k") == str(won.index(True)).encode()


async def test_list_keys_is_sorted_per_namespace(any_backend: Backend) -> None:
    store = any_backend.open()
    for key in ("b", "a/c", "a", "B", "a-b", "a_b"):
        await store.put("reference_value", key, b"1")
    await store.put("kbs", "z", b"1")
    assert await store.list_keys("reference_value") == sorted(["b", "a/c", "a", "B", "a-b", "a_b"])
    assert await store.list_keys("kbs") == ["z"]
    assert await store.list_keys("provisioner") == []


async def test_large_binary_values_round_trip(any_backend: Backend) -> None:
    store = any_backend.open()
    value = os.urandom(4 * 1024 * 1024) + bytes(range(256))
    assert await store.put("repository", "default/big/blob", value)
    assert await store.get("repository", "default/big/blob") == value
    assert await store.pop("repository", "default/big/blob") == value
    assert await store.put("repository", "default/empty/blob", b"")
    assert await store.get("repository", "default/empty/blob") == b""


@pytest.mark.parametrize("key", ["", ".hidden", "/abs", "a/../b", "sp ace", "x" * 600, "semi;colon", "quote'", "nul\0"])
async def test_bad_keys_are_refused(any_backend: Backend, key: str) -> None:
    store = any_backend.open()
    for call in (store.put("kbs", key, b"1"), store.get("kbs", key), store.pop("kbs", key), store.delete("kbs", key)):
        with pytest.raises(MalformedRequestError):
            await call


@pytest.mark.parametrize("namespace", ["", "Upper", "1digit", 'x"; DROP TABLE kbs; --', "a" * 64, "colon:ns"])
async def test_bad_namespaces_are_refused(any_backend: Backend, namespace: str) -> None:
    store = any_backend.open()
    with pytest.raises(MalformedRequestError):
        await store.put(namespace, "k", b"1")
    with pytest.raises(MalformedRequestError):
        await store.list_keys(namespace)


# --- durable backends only -------------------------------------------------------------


async def test_purge_removes_only_expired_entries(durable: Backend) -> None:
    store = durable.open()
    await store.put(SESSIONS, "old", b"x", expires_at=time.time() - 1)
    await store.put("intel-dcap-collateral", "old", b"x", expires_at=time.time() - 1)
    await store.put(SESSIONS, "live", b"y", expires_at=time.time() + 60)
    await store.put("kbs", "forever", b"z")
    assert await store.purge_expired() == 2
    assert await store.purge_expired() == 0
    assert await store.get(SESSIONS, "live") == b"y"
    assert await store.get("kbs", "forever") == b"z"


@pytest.fixture(params=[*[name for name in DURABLE if name != "memory"], "redis"])  # memory is per process by design
async def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _backend(request, tmp_path):
        yield backend


async def test_data_survives_reopen(persistent: Backend) -> None:
    durable = persistent
    first = durable.open()
    await first.put("reference_value", "svn", b"kept")
    await first.put(SESSIONS, "s", b"kept too", expires_at=time.time() + 60)
    await first.close()
    durable.opened.remove(first)
    second = durable.open()
    assert await second.get("reference_value", "svn") == b"kept"
    assert await second.get(SESSIONS, "s") == b"kept too"


@pytest.fixture(params=[*DURABLE, "redis"])
async def full(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _backend(request, tmp_path):
        yield backend


async def test_enumerating_namespaces_and_entries(full: Backend) -> None:
    store = full.open()
    assert isinstance(store, ExportableStore)
    expires = time.time() + 60
    await store.put("attestation_service_policy", "default_cpu.rego", b"package policy")
    await store.put("intel-dcap-collateral", "fmspc/00906ED50000", b"{}", expires_at=expires)
    await store.put(SESSIONS, "expired", b"x", expires_at=time.time() - 1)
    assert {"attestation_service_policy", "intel-dcap-collateral"} <= set(await store.namespaces())
    assert await store.entries("attestation_service_policy") == [Entry("default_cpu.rego", b"package policy", None)]
    [collateral] = await store.entries("intel-dcap-collateral")
    assert (collateral.key, collateral.value) == ("fmspc/00906ED50000", b"{}")
    assert collateral.expires_at == pytest.approx(expires)
    assert await store.entries(SESSIONS) == []
