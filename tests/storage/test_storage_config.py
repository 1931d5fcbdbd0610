"""`[storage_backend]`, `session_storage_type` and the resource backend: parsing and refusal at start."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kbs.config import parse_kbs_config
from tests.kbs.helpers import kbs_toml, make_material, run_kbs_expect_exit
from tests.procs import Proc, free_port, script
from tests.tools.stack import run_tool
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.storage.factory import StorageConfig

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


def test_environment_overrides_the_urls() -> None:
    text = 'storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://file/db"\n[backends.redis]\nurl = "redis://file:1"'
    config = parse(text, POSTGRES_URL="postgresql://env/db", REDIS_URL="redis://env:2/1")
    assert config.postgres is not None and config.postgres.url == "postgresql://env/db"
    assert config.redis is not None and config.redis.url == "redis://env:2/1"
    assert parse('storage_type = "Postgres"', POSTGRES_URL="postgresql://only-env/db").storage_type == "Postgres"


def test_a_bad_unused_environment_url_does_not_matter() -> None:
    assert parse("", POSTGRES_URL="mysql://x").storage_type == "Sqlite"


@pytest.mark.parametrize(("text", "env", "message"), [
    ('storage_type = "LocalFs"', {}, "storage_backend.storage_type 'LocalFs' is not one of Sqlite, Memory, Postgres, Redis"),
    ('storage_type = "Postgres"', {}, "is Postgres but storage_backend.backends.postgres has no url"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "mysql://h/db"', {}, "must be a postgresql:// URL"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h:99999/db"', {}, "port '99999' is not 1-65535"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://u:pw@h/db?bogus=1"', {}, "postgresql://u:***@h/db?bogus=1"),
    ('storage_type = "Postgres"', {"POSTGRES_URL": "http://x"}, "environment variable POSTGRES_URL 'http://x' must be a postgresql:// URL"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h/db"\nhost = "h"', {}, "either url or host"),
    ('storage_type = "Postgres"\n[backends.postgres]\nurl = "postgresql://h/db"\npool_size = 0', {}, "pool_size must be >= 1"),
    ('storage_type = "Redis"\n[backends.redis]\nurl = "redis://h:1"', {}, '"Redis" is for KBS sessions only'),
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
    ("", '[storage_backend]\nstorage_type = "Redis"\n[storage_backend.backends.redis]\nurl = "redis://h:1"\n', None,
     '"Redis" is for KBS sessions only'),
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


@pytest.mark.parametrize("program", ["rvps", "grpc-as"])
def test_rvps_and_as_refuse_redis(tmp_path: Path, program: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[storage_backend]\nstorage_type = "Redis"\n[storage_backend.backends.redis]\nurl = "redis://127.0.0.1:1"\n')
    proc = Proc([script(program), "-c", str(config)], tmp_path / "log")
    code = proc.popen.wait(30)
    output = proc.output()
    proc.stop()
    assert code == 1
    assert '"Redis" is for KBS sessions only' in output


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
