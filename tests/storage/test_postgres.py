"""PostgreSQL backend specifics: schema creation and upgrade, errors, resources in the database."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from tests.procs import free_port
from trustee_common.errors import StorageError
from trustee_common.storage.kv_resources import KvResourceStore
from trustee_common.storage.postgres import KNOWN_NAMESPACES, SCHEMA_VERSION, PostgresStore
from trustee_common.storage.redis import RedisStore
from trustee_common.storage.urls import redact_url


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    return {str(r[0]) for r in found}


async def test_schema_is_created_on_start(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.check()
    await store.close()
    assert tables(postgres_url) == {*KNOWN_NAMESPACES, "trustee_meta", "trustee_namespaces"}
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT value FROM trustee_meta WHERE name = 'schema_version'").fetchone()
        columns = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'repository'").fetchall()
    assert row == (str(SCHEMA_VERSION),)
    assert dict(columns) == {"key": "text", "value": "bytea", "expires_at": "double precision"}


async def test_an_upstream_table_is_migrated_in_place(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:  # upstream Trustee's layout: key TEXT PRIMARY KEY, value BYTEA
        conn.execute('CREATE TABLE "reference_value" (key TEXT PRIMARY KEY, value BYTEA)')
        conn.execute("INSERT INTO reference_value VALUES ('svn', %s)", (b'{"name":"svn"}',))
    store = PostgresStore(postgres_url)
    try:
        assert await store.get("reference_value", "svn") == b'{"name":"svn"}'
        await store.put("reference_value", "tmp", b"x", expires_at=time.time() - 1)
        assert await store.list_keys("reference_value") == ["svn"]
    finally:
        await store.close()


async def test_two_stores_starting_together_create_the_schema_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(s.put("dynamic-ns", f"k{i}", b"v") for i, s in enumerate(stores)))
        assert await stores[0].list_keys("dynamic-ns") == ["k0", "k1", "k2", "k3"]
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    await (first := PostgresStore(postgres_url)).check()
    await first.close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE trustee_meta SET value = '999' WHERE name = 'schema_version'")
    store = PostgresStore(postgres_url)
    with pytest.raises(StorageError, match="schema version 999 is newer"):
        await store.get("kbs", "k")
    await store.close()


async def test_unreachable_server_is_a_storage_error_without_the_password() -> None:
    store = PostgresStore(f"postgresql://trustee:s3cret@127.0.0.1:{free_port()}/trustee")
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL") as caught:
        await store.get("kbs", "k")
    assert "s3cret" not in caught.value.detail
    assert "trustee:***@127.0.0.1" in caught.value.detail
    await store.close()


async def test_wrong_password_is_reported(postgres_server: object, postgres_url: str) -> None:
    store = PostgresStore(postgres_url.replace("postgres@", "nosuchuser:pw@"))
    with pytest.raises(StorageError, match='role "nosuchuser" does not exist'):
        await store.check()
    await store.close()


async def test_unreachable_redis_is_a_storage_error() -> None:
    store = RedisStore(f"redis://:pw@127.0.0.1:{free_port()}/0")
    with pytest.raises(StorageError, match=r"Redis store redis://:\*\*\*@127.0.0.1") as caught:
        await store.check()
    assert "pw@" not in caught.value.detail
    await store.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://h/db?user=u&password=secret&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_resources_live_in_the_repository_namespace(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    resources = KvResourceStore(store)
    try:
        await resources.write("default/key/one", b"1")
        await resources.write("other/cert/two", b"2")
        assert await resources.read("default/key/one") == b"1"
        assert await resources.list() == ["default/key/one", "other/cert/two"]
        assert await store.get("repository", "other/cert/two") == b"2"
        assert await resources.delete("default/key/one")
        assert not await resources.delete("default/key/one")
        assert await resources.read("default/key/one") is None
    finally:
        await store.close()
