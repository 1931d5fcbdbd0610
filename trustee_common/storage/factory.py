"""Build the configured `KeyValueStore` (the one place that knows the backends).

Config table `[storage_backend]`, the same in every service (docs/storage.md);
upstream's RVPS calls it `storage` (the caller names the table, `where`):

    storage_type = "Sqlite" (default) | "Memory" | "Postgres" | "Redis" | "LocalFs" | "LocalJson"
    [storage_backend.backends.sqlite]
    path = "<file>"        (default: <data dir>/storage.sqlite3 given by the caller)
    [storage_backend.backends.postgres]
    url = "postgresql://user:password@host:5432/db"   (env POSTGRES_URL overrides;
                           or upstream's host, port, db, username, password)
    pool_size = 10
    [storage_backend.backends.redis]
    url = "redis://127.0.0.1:6379/0"                   (env REDIS_URL overrides)
    pool_size = 10
    [storage_backend.backends.local_fs]
    dir_path = "<dir>"     (default /opt/confidential-containers/storage/local_fs)
    [storage_backend.backends.local_json]
    file_dir_path = "<dir>"  (default /opt/confidential-containers/storage/local_json)

`LocalFs` and `LocalJson` are upstream's types: they are served by SQLite
with its file in that directory, filled once from the data an upstream
Trustee left there (`upstream_local`). `Redis` is not durable unless its
operator makes it so: a warning says so at start (sessions excepted). Type
names are matched case-insensitively, and upstream's snake_case spellings
are accepted. The backend of the chosen type must be fully configured; a
bad URL is a `ConfigError` at start, before anything is served.

`StorageConfig.with_type` gives the same backends under another type: what
upstream's type overrides mean (KBS `session_storage_type`, `[attestation_service]
storage_type`, AS `rvps_config.storage_type`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlsplit

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, StorageError
from trustee_common.storage.base import KeyValueStore
from trustee_common.storage.memory import MemoryStore
from trustee_common.storage.sqlite import SqliteStore, create_private
from trustee_common.storage.upstream_local import DEFAULT_DIRS, LAYOUTS, database_path, open_local
from trustee_common.storage.urls import redact_url

logger = logging.getLogger(__name__)

#: Our backends (`StorageConfig.storage_type`); upstream's `LocalFs`/`LocalJson` are SQLite (`StorageConfig.layout`).
BACKENDS = ("Sqlite", "Memory", "Postgres", "Redis")
STORAGE_TYPES = (*BACKENDS, *LAYOUTS)
_ALIASES = {"sqlite": "Sqlite", "memory": "Memory", "postgres": "Postgres", "postgresql": "Postgres", "redis": "Redis",
            "localfs": "LocalFs", "local_fs": "LocalFs", "localjson": "LocalJson", "local_json": "LocalJson"}
#: Upstream's defaults when `backends.postgres` / `backends.redis` is given without a URL.
UPSTREAM_POSTGRES_HOST = "localhost"
UPSTREAM_REDIS_URL = "redis://127.0.0.1:6379"
POSTGRES_ENV = "POSTGRES_URL"
REDIS_ENV = "REDIS_URL"
DEFAULT_POOL_SIZE = 10
POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class BackendUrl:
    """A server backend's URL (may hold a password: show `shown`, never `url`) and pool size."""

    url: str
    pool_size: int = DEFAULT_POOL_SIZE
    where: str = "url"

    @property
    def shown(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class StorageConfig:
    """One service's storage. `storage_type` is our backend; `layout` is set when upstream's LocalFs/LocalJson chose it."""

    storage_type: str = "Sqlite"
    #: `backends.sqlite.path`: the Sqlite file (`database_path` is the one in use, which differs for LocalFs/LocalJson).
    sqlite_path: Path = Path("storage.sqlite3")
    postgres: BackendUrl | None = None
    redis: BackendUrl | None = None
    #: "LocalFs" or "LocalJson" when that type was configured (storage_type is then "Sqlite"); None otherwise.
    layout: str | None = None
    #: `backends.local_fs.dir_path` and `backends.local_json.file_dir_path` (upstream's defaults when absent).
    local_fs_dir: Path = DEFAULT_DIRS["LocalFs"]
    local_json_dir: Path = DEFAULT_DIRS["LocalJson"]
    #: The config table this came from, for messages (`storage` in upstream's RVPS config).
    table: str = "storage_backend"

    @classmethod
    def from_table(cls, table: ConfigTable, default_sqlite_path: Path, *, environ: Mapping[str, str] | None = None,
                   where: str = "storage_backend") -> StorageConfig:
        """Parse a `[storage_backend]` table; `where` names it in messages (upstream's RVPS calls it `storage`)."""
        env = os.environ if environ is None else environ
        kind_text = table.string("storage_type", "Sqlite") or "Sqlite"
        backends = table.table("backends")
        sqlite = backends.table("sqlite")
        path = Path(sqlite.string("path", str(default_sqlite_path)) or default_sqlite_path)
        sqlite.finish()
        postgres = _postgres(backends, env, f"{where}.backends.postgres")
        redis = _redis(backends, env, f"{where}.backends.redis")
        local_fs = _directory(backends, "local_fs", "dir_path")
        local_json = _directory(backends, "local_json", "file_dir_path")
        backends.finish()
        table.finish()
        base = cls(sqlite_path=path, postgres=postgres, redis=redis, local_fs_dir=local_fs or DEFAULT_DIRS["LocalFs"],
                   local_json_dir=local_json or DEFAULT_DIRS["LocalJson"], table=where)
        return base.with_type(kind_text, f"{where}.storage_type")

    def with_type(self, kind_text: str, where: str) -> StorageConfig:
        """The same backends under another storage type (upstream's spellings too); `where` names the key in messages.

        For upstream's per-service type overrides: `rvps_config.storage_type` and `[attestation_service] storage_type`
        (and, through `for_sessions`, `session_storage_type`). Refuses a type whose backend is not configured."""
        kind = storage_type(kind_text, where)
        layout = kind if kind in LAYOUTS else None
        config = replace(self, storage_type="Sqlite" if layout else kind, layout=layout)
        config.require(where)
        return config

    @property
    def local_dir(self) -> Path | None:
        """The LocalFs/LocalJson directory in use, or None."""
        if self.layout is None:
            return None
        return self.local_fs_dir if self.layout == "LocalFs" else self.local_json_dir

    @property
    def database_path(self) -> Path:
        """The SQLite file this store uses when `storage_type` is Sqlite."""
        directory = self.local_dir
        return self.sqlite_path if directory is None else database_path(directory)

    def require(self, where: str) -> None:
        """Refuse a type whose backend is not configured."""
        if self.storage_type == "Postgres":
            if self.postgres is None:
                raise ConfigError(f"{where} is Postgres but {self.table}.backends.postgres has no url (nor is {POSTGRES_ENV} set)")
            check_postgres_url(self.postgres.url, self.postgres.where)
        if self.storage_type == "Redis":
            if self.redis is None:
                raise ConfigError(f"{where} is Redis but {self.table}.backends.redis has no url (nor is {REDIS_ENV} set)")
            check_redis_url(self.redis.url, self.redis.where)

    def for_sessions(self, kind_text: str, where: str = "session_storage_type") -> StorageConfig:
        """The KBS session store (`session_storage_type`): the same backends with another type."""
        return self.with_type(kind_text, where)

    def describe(self) -> str:
        """For logs: the type and where the data is, without passwords."""
        if self.storage_type == "Postgres" and self.postgres is not None:
            return f"Postgres {self.postgres.shown}"
        if self.storage_type == "Redis" and self.redis is not None:
            return f"Redis {self.redis.shown}"
        if self.storage_type == "Memory":
            return "Memory"
        if self.layout is not None:
            return f"{self.layout} {self.local_dir} (Sqlite {self.database_path})"
        return f"Sqlite {self.sqlite_path}"


def storage_type(text: str, where: str) -> str:
    kind = _ALIASES.get(text.lower())
    if kind is None:
        raise ConfigError(f"{where} {text!r} is not one of {', '.join(STORAGE_TYPES)}")
    return kind


def check_postgres_url(url: str, where: str) -> str:
    if url.partition("://")[0] not in POSTGRES_SCHEMES or "://" not in url:
        raise ConfigError(f"{where} {redact_url(url)!r} must be a postgresql:// URL")
    import psycopg  # loaded only when a PostgreSQL URL is configured

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        detail = str(exc).strip().split(" in URI:")[0]
        raise ConfigError(f"{where} {redact_url(url)!r} is not a valid PostgreSQL URL: {detail}") from None
    port = params.get("port")
    if port is not None and (not str(port).isdigit() or not 0 < int(str(port)) < 65536):
        raise ConfigError(f"{where} {redact_url(url)!r}: port {port!r} is not 1-65535")
    return url


def check_redis_url(url: str, where: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.port is None or parts.port > 0
    except ValueError:  # a bad port or IPv6 literal
        valid = False
    if not valid or parts.scheme not in REDIS_SCHEMES or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(f"{where} {redact_url(url)!r} must be a redis://host[:port][/db], rediss:// or unix:// URL")
    return url


def _postgres(backends: ConfigTable, env: Mapping[str, str], where: str) -> BackendUrl | None:
    present = backends.has("postgres")
    table = backends.table("postgres")
    url = table.string("url")
    pool = table.integer("pool_size", DEFAULT_POOL_SIZE, minimum=1)
    parts = {k: table.string(k) for k in ("host", "db", "username", "password")}
    port = table.integer("port", 5432, minimum=1)
    table.finish()
    given = any(parts.values()) or table.has("port")
    if url is not None and given:
        raise ConfigError(f"{where}: give either url or host/port/db/username/password, not both")
    shown_where = f"{where}.url"
    if url is None and present:
        # Upstream's form, with its defaults (postgres@localhost:5432/postgres).
        user = quote(parts["username"] or "postgres", safe="")
        password = "" if parts["password"] is None else ":" + quote(parts["password"], safe="")
        host = parts["host"] or UPSTREAM_POSTGRES_HOST
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        url = f"postgresql://{user}{password}@{host}:{port}/{quote(parts['db'] or 'postgres', safe='')}"
        shown_where = where
    if env.get(POSTGRES_ENV):
        url, shown_where = env[POSTGRES_ENV], f"environment variable {POSTGRES_ENV}"
    return None if url is None else BackendUrl(url, pool, shown_where)


def _redis(backends: ConfigTable, env: Mapping[str, str], where: str) -> BackendUrl | None:
    present = backends.has("redis")
    table = backends.table("redis")
    url = table.string("url")
    pool = table.integer("pool_size", DEFAULT_POOL_SIZE, minimum=1)
    table.finish()
    if url is None and present:
        url = UPSTREAM_REDIS_URL  # upstream's default
    shown_where = f"{where}.url"
    if env.get(REDIS_ENV):
        url, shown_where = env[REDIS_ENV], f"environment variable {REDIS_ENV}"
    return None if url is None else BackendUrl(url, pool, shown_where)


def _directory(backends: ConfigTable, name: str, key: str) -> Path | None:
    table = backends.table(name)
    text = table.string(key)
    table.finish()
    return None if text is None else Path(text)


def open_kv_store(config: StorageConfig) -> KeyValueStore:
    """The store (server backends connect on first use; `check` forces it). Warns once when Redis holds durable state."""
    if config.storage_type == "Redis":
        logger.warning("storage: Redis keeps this service's policies, resources and reference values only as durably as "
                       "the Redis server is configured to (AOF/RDB persistence and replication are its operator's job)")
    return _open(config)


def _open(config: StorageConfig) -> KeyValueStore:
    config.require("storage_type")
    if config.storage_type == "Memory":
        return MemoryStore()
    # Drivers are imported only when their backend is chosen (services start faster without them).
    if config.storage_type == "Postgres" and config.postgres is not None:
        from trustee_common.storage.postgres import PostgresStore

        return PostgresStore(config.postgres.url, pool_size=config.postgres.pool_size)
    if config.storage_type == "Redis" and config.redis is not None:
        from trustee_common.storage.redis import RedisStore

        return RedisStore(config.redis.url, pool_size=config.redis.pool_size)
    if config.layout is not None and config.local_dir is not None:
        return open_local(config.layout, config.local_dir)
    return SqliteStore(config.sqlite_path)


def session_sqlite_path(sqlite_path: Path) -> Path:
    """Where SQLite-stored KBS sessions live: a sibling file, `storage.sqlite3` -> `storage-sessions.sqlite3`."""
    return sqlite_path.with_name(f"{sqlite_path.stem}-sessions{sqlite_path.suffix}")


def describe_sessions(config: StorageConfig) -> str:
    """For logs: where `open_session_store` keeps the sessions."""
    if config.storage_type == "Sqlite":
        return f"Sqlite {session_sqlite_path(config.database_path)} (synchronous=NORMAL)"
    return config.describe()


def open_session_store(config: StorageConfig) -> KeyValueStore:
    """The KBS session store: SQLite in its own file without fsync (sessions live minutes); others as configured.

    With LocalFs/LocalJson the file is in that directory, and nothing is imported into it (sessions are not)."""
    if config.storage_type == "Sqlite":
        path = session_sqlite_path(config.database_path)
        if config.local_dir is not None:
            try:
                config.local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                create_private(path)
            except OSError as exc:
                raise StorageError(f"cannot open SQLite store {path}: {exc}") from exc
        return SqliteStore(path, durable=False)
    return _open(config)
