"""`[storage_backend]`, `session_storage_type` and the resource backend: parsing and refusal at start."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import grpc
import psycopg
import pytest

from kbs.config import parse_kbs_config
from tests.kbs.helpers import kbs_toml, make_material, run_kbs_expect_exit
from tests.procs import Proc, free_port, script
from tests.storage.servers import PostgresServer
from tests.tools.stack import run_tool
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.storage.factory import StorageConfig
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

DEFAULT = Path("/d/storage.sqlite3")


def parse(text: str, **env: str) -> StorageConfig:
    return StorageConfig.from_table(ConfigTable(tomllib.loads(text), "storage_backend"), DEFAULT, environ=env)


def test_defaults_to_sqlite_next_to_the_config() -> None:
    assert parse("") == StorageConfig("Sqlite", DEFAULT)


def test_postgres_url_and_pool_size() -> None:
    config = parse('storage_type = "postgres"\n[backends.postgres]\nurl = "postgresql://u:pw@db:5433/trustee"\npool_size = 3')
    assert (config.storage_type, config.postgres and config.postgres.url, config.postgres and config.postgres.pool_size) == (
        "Postgres", "postgresql://u:pw@db:5433/trustee", 3)
    assert config.describe() == "Postgres postgresql://u:***@db:5433/trustee"


def test_upstream_postgres_keys_make_a_url() -> None:
    table = '[backends.postgres]\nhost = "db"\nport = 6000\ndb = "kbs"\nusername = "k"\npassword = "p@ss"'
    config = parse('storage_type = "Postgres"\n' + table)
    assert config.postgres is not None and config.postgres.url == "postgresql://k:p%40ss@db:6000/kbs"


@pytest.mark.parametrize(("table", "url"), [
    ("", "postgresql://postgres@localhost:5432/postgres"),
    ('db = "kbs"', "postgresql://postgres@localhost:5432/kbs"),
    ('host = "::1"\npassword = "pw"', "postgresql://postgres:pw@[::1]:5432/postgres"),
])
def test_upstream_postgres_defaults(table: str, url: str) -> None:
    """Upstream's defaults for the keys left out of `[backends.postgres]` (the table itself must be there)."""
    config = parse(f'storage_type = "postgres"\n[backends.postgres]\n{table}')
    assert config.postgres is not None and config.postgres.url == url


def test_upstream_redis_default_url() -> None:
    config = parse('storage_type = "redis"\n[backends.redis]\n')
    assert (config.storage_type, config.redis and config.redis.url) == ("Redis", "redis://127.0.0.1:6379")


def test_environment_overrides_the_urls() -> None:
    text = 'storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://file/db"\n[backends.redis]\nurl = "redis://file:1"'
    config = parse(text, POSTGRES_URL="postgresql://env/db", REDIS_URL="redis://env:2/1")
    assert config.postgres is not None and config.postgres.url == "postgresql://env/db"
    assert config.redis is not None and config.redis.url == "redis://env:2/1"
    assert parse('storage_type = "Postgres"', POSTGRES_URL="postgresql://only-env/db").storage_type == "Postgres"


def test_a_bad_unused_environment_url_does_not_matter() -> None:
    assert parse("", POSTGRES_URL="mysql://x").storage_type == "Sqlite"


@pytest.mark.parametrize(("text", "env", "message"), [
    ('storage_type = "Vault"', {}, "storage_backend.storage_type 'Vault' is not one of Sqlite, Memory, Postgres, Redis, LocalFs, "
                                   "LocalJson"),
    ('storage_type = "Postgres"', {}, "is Postgres but storage_backend.backends.postgres has no url"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "mysql://h/db"', {}, "must be a postgresql:// URL"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h:99999/db"', {}, "port '99999' is not 1-65535"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://u:pw@h/db?bogus=1"', {}, "postgresql://u:***@h/db?bogus=1"),
    ('storage_type = "Postgres"', {"POSTGRES_URL": "http://x"}, "environment variable POSTGRES_URL 'http://x' must be a postgresql:// URL"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h/db"\nhost = "h"', {}, "either url or host"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h/db"\npool_size = 0', {}, "pool_size must be >= 1"),
    ('storage_type = "Postgres"\n[backends.postgres]\nport = 70000', {}, "port '70000' is not 1-65535"),
    ('storage_type = "Redis"', {}, "is Redis but storage_backend.backends.redis has no url"),
    ("[backends.postgres]\nuri = 'x'", {}, "unknown key(s) in storage_backend.backends.postgres: uri"),
    ("[backends.mongo]", {}, "unknown key(s) in storage_backend.backends: mongo"),
    ("pool_size = 3", {}, "unknown key(s) in storage_backend: pool_size"),
])
def test_bad_storage_config_is_refused(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, **env)
    assert message in caught.value.detail
    assert "pw@" not in caught.value.detail


@pytest.mark.parametrize("url", ["redis://h:1", "rediss://:pw@h/2", "unix:///run/redis.sock"])
def test_sessions_may_use_redis(url: str) -> None:
    config = parse(f'[backends.redis]\nurl = "{url}"').for_sessions("redis")
    assert (config.storage_type, config.redis and config.redis.url) == ("Redis", url)


@pytest.mark.parametrize("url", ["redis://", "redis://h:notaport/0", "http://h:1", "postgresql://h/db"])
def test_bad_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="must be a redis://"):
        parse(f'[backends.redis]\nurl = "{url}"').for_sessions("Redis")


def kbs_config_text(tmp_path: Path, *, storage: str, extra_top: str = "", plugin: str | None = None) -> str:
    text = kbs_toml(free_port(), make_material(tmp_path), tmp_path / "repo", as_port=free_port(), storage=storage)
    if plugin is not None:
        start = text.index("[[plugins]]")
        text = text[:start] + plugin
    return extra_top + text


def test_kbs_session_storage_and_kv_resources(tmp_path: Path) -> None:
    storage = '[storage_backend]\nstorage_type = "Postgres"\n[storage_backend.backends.postgres]\nurl = "postgresql://h/db"\n' \
              '[storage_backend.backends.redis]\nurl = "redis://r:6379/0"\n'
    text = kbs_config_text(tmp_path, storage=storage, extra_top='session_storage_type = "Redis"\n',
                           plugin='[[plugins]]\nname = "resource"\nstorage_backend_type = "kvstorage"\n')
    config = parse_kbs_config(tomllib.loads(text), default_dir=tmp_path)
    assert config.storage.storage_type == "Postgres"
    assert config.session_storage is not None and config.session_storage.storage_type == "Redis"
    assert config.resource_plugin is not None and (config.resource_plugin.kind, config.resource_plugin.dir_path) == ("KvStorage", None)


@pytest.mark.parametrize(("top", "storage", "plugin", "expected"), [
    ('session_storage_type = "Redis"\n', "", None, "session_storage_type is Redis but storage_backend.backends.redis has no url"),
    ('session_storage_type = "Cassandra"\n', "", None, "session_storage_type 'Cassandra' is not one of"),
    ("", '[storage_backend]\nstorage_type = "Postgres"\n[storage_backend.backends.postgres]\nurl = "postgres://[::1/db"\n', None,
     "is not a valid PostgreSQL URL"),
    ("", "", '[[plugins]]\nname = "resource"\ntype = "KvStorage"\ndir_path = "/x"\n', "dir_path is only for the LocalFs"),
    ("", "", '[[plugins]]\nname = "resource"\nstorage_backend_type = "Vault"\n', "storage_backend_type 'Vault' is not supported"),
    ("", "", '[[plugins]]\nname = "resource"\ntype = "S3"\n', "resource backend type 'S3' is not one of LocalFs, KvStorage"),
])
def test_kbs_refuses_bad_storage_at_start(tmp_path: Path, top: str, storage: str, plugin: str | None, expected: str) -> None:
    text = kbs_config_text(tmp_path, storage=storage, extra_top=top, plugin=plugin)
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text)
    assert code == 2, output
    assert expected in output


def test_kbs_with_an_unreachable_database_fails_at_start(tmp_path: Path) -> None:
    url = f"postgresql://trustee:s3cret@127.0.0.1:{free_port()}/trustee"
    storage = f'[storage_backend]\nstorage_type = "Postgres"\n[storage_backend.backends.postgres]\nurl = "{url}"\n'
    code, output = run_kbs_expect_exit(tmp_path / "kbs", kbs_config_text(tmp_path, storage=storage))
    assert code != 0, output
    assert "cannot connect to PostgreSQL postgresql://trustee:***@127.0.0.1" in output
    assert "s3cret" not in output


async def query_rvps(port: int, name: str) -> object:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
        return json.loads(reply.reference_value_results) if reply.HasField("reference_value_results") else None


async def register_and_restart(tmp_path: Path, storage: str) -> str:
    """Register a value in a real `rvps` on `storage`, restart it, query it back; returns the first run's log."""
    config = tmp_path / "rvps.toml"
    config.write_text(storage)
    logs = []
    for run in range(2):
        port = free_port()
        proc = Proc([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{port}"], tmp_path / f"rvps{run}.log", port=port)
        try:
            if run == 0:
                payload = base64.b64encode(json.dumps({"svn": ["7"]}).encode()).decode()
                message = json.dumps({"version": "0.1.0", "type": "sample", "payload": payload})
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
                    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message))
            assert await query_rvps(port, "svn") == ["7"]
        finally:
            assert proc.stop() == 0, proc.log.read_text()
        logs.append(proc.log.read_text())
    return logs[0]


async def test_rvps_on_redis_warns_about_durability(tmp_path: Path, redis_url: str) -> None:
    log = await register_and_restart(tmp_path, f'[storage_backend]\nstorage_type = "redis"\n[storage_backend.backends.redis]\n'
                                               f'url = "{redis_url}"\n')
    warnings = [line for line in log.splitlines() if "only as durably as the Redis server" in line]
    assert len(warnings) == 1, log


def test_grpc_as_starts_on_redis(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "as.toml"
    config.write_text(f'[storage_backend]\nstorage_type = "Redis"\n[storage_backend.backends.redis]\nurl = "{redis_url}"\n')
    port = free_port()
    proc = Proc([script("grpc-as"), "-c", str(config), "--socket", f"127.0.0.1:{port}"], tmp_path / "as.log", port=port)
    assert proc.stop() == 0, proc.log.read_text()
    assert "only as durably as the Redis server" in proc.log.read_text()


async def test_rvps_on_postgres_with_upstreams_keys(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """host/port/db/username/password, as upstream writes them, against the real server (it trusts local logins)."""
    url = postgres_server.new_database()
    database = url.rsplit("/", 1)[1]
    storage = ('[storage_backend]\nstorage_type = "postgres"\n[storage_backend.backends.postgres]\n'
               f'host = "127.0.0.1"\nport = {postgres_server.port}\ndb = "{database}"\nusername = "postgres"\npassword = "unused"\n')
    log = await register_and_restart(tmp_path, storage)
    assert "unused" not in log
    with psycopg.connect(url) as conn:
        [(value,)] = conn.execute("SELECT value FROM reference_value WHERE key = 'svn'").fetchall()
    assert json.loads(bytes(value))["value"] == ["7"]


@pytest.mark.parametrize("spelling", ["Memory", "memory"])
def test_memory_storage_still_refuses_several_kbs_workers(tmp_path: Path, spelling: str) -> None:
    storage = f'[storage_backend]\nstorage_type = "{spelling}"\n'
    code, output = run_kbs_expect_exit(tmp_path / "kbs", kbs_config_text(tmp_path, storage=storage), args=("--workers", "2"))
    assert code == 2, output
    assert 'storage_backend.storage_type "Memory" is kept inside one process' in output


@pytest.mark.parametrize(("value", "message"), [
    ("mysql://h/db", "--storage 'mysql://h/db' must be a postgresql:// URL (or 'sqlite')"),
    ("postgresql://u:pw@h:0/db", "--storage 'postgresql://u:***@h:0/db': port '0' is not 1-65535"),
])
def test_trustee_run_refuses_a_bad_storage_url(tmp_path: Path, value: str, message: str) -> None:
    result = run_tool("trustee", "run", "--data-dir", str(tmp_path / "data"), "--storage", value)
    assert result.returncode == 2
    assert message in result.stderr
    assert "pw@" not in result.stderr
    assert not (tmp_path / "data").exists()
