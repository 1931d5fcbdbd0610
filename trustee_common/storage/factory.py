"""Build the configured `KeyValueStore` (the one place that knows the backends).

Config table `[storage_backend]`, the same in every service (docs/storage.md):

    storage_type = "Sqlite" (default) | "Memory" | "Postgres"
    [storage_backend.backends.sqlite]
    path = "<file>"        (default: <data dir>/storage.sqlite3 given by the caller)
    [storage_backend.backends.postgres]
    url = "postgresql://user:password@host:5432/db"   (env POSTGRES_URL overrides;
                           or upstream's host, port, db, username, password)
    pool_size = 10
    [storage_backend.backends.redis]
    url = "redis://127.0.0.1:6379/0"                   (env REDIS_URL overrides)
    pool_size = 10

"Redis" is accepted only for KBS sessions (`StorageConfig.for_sessions`,
the KBS's top-level `session_storage_type`). Type names are matched
case-insensitively, and upstream's snake_case spellings are accepted. The
backend of the chosen type must be fully configured; a bad URL is a
`ConfigError` at start, before anything is served.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlsplit

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.storage.base import KeyValueStore
from trustee_common.storage.memory import MemoryStore
from trustee_common.storage.sqlite import SqliteStore
from trustee_common.storage.urls import redact_url

STORAGE_TYPES = ("Sqlite", "Memory", "Postgres", "Redis")
_ALIASES = {"sqlite": "Sqlite", "memory": "Memory", "postgres": "Postgres", "postgresql": "Postgres", "redis": "Redis"}
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
    storage_type: str = "Sqlite"
    sqlite_path: Path = Path("storage.sqlite3")
    postgres: BackendUrl | None = None
    redis: BackendUrl | None = None

    @classmethod
    def from_table(cls, table: ConfigTable, default_sqlite_path: Path, *, environ: Mapping[str, str] | None = None) -> StorageConfig:
        env = os.environ if environ is None else environ
        kind = storage_type(table.string("storage_type", "Sqlite") or "Sqlite", "storage_backend.storage_type")
        backends = table.table("backends")
        sqlite = backends.table("sqlite")
        path = Path(sqlite.string("path", str(default_sqlite_path)) or default_sqlite_path)
        sqlite.finish()
        postgres = _postgres(backends.table("postgres"), env)
        redis = _redis(backends.table("redis"), env)
        backends.finish()
        table.finish()
        if kind == "Redis":
            raise ConfigError(
                'storage_backend.storage_type "Redis" is for KBS sessions only (it is not durable): keep storage_type on '
                'Sqlite or Postgres and set session_storage_type = "Redis" at the top of the KBS config'
            )
        config = cls(kind, path, postgres, redis)
        config.require("storage_backend.storage_type")
        return config

    def require(self, where: str) -> None:
        """Refuse a type whose backend is not configured."""
        if self.storage_type == "Postgres":
            if self.postgres is None:
                raise ConfigError(f"{where} is Postgres but storage_backend.backends.postgres has no url (nor is {POSTGRES_ENV} set)")
            check_postgres_url(self.postgres.url, self.postgres.where)
        if self.storage_type == "Redis":
            if self.redis is None:
                raise ConfigError(f"{where} is Redis but storage_backend.backends.redis has no url (nor is {REDIS_ENV} set)")
            check_redis_url(self.redis.url, self.redis.where)

    def for_sessions(self, kind_text: str, where: str = "session_storage_type") -> StorageConfig:
        """The KBS session store: the same backends with another type (Redis allowed)."""
        config = replace(self, storage_type=storage_type(kind_text, where))
        config.require(where)
        return config

    def describe(self) -> str:
        """For logs: the type and where the data is, without passwords."""
        if self.storage_type == "Postgres" and self.postgres is not None:
            return f"Postgres {self.postgres.shown}"
        if self.storage_type == "Redis" and self.redis is not None:
            return f"Redis {self.redis.shown}"
        return "Memory" if self.storage_type == "Memory" else f"Sqlite {self.sqlite_path}"


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


def _postgres(table: ConfigTable, env: Mapping[str, str]) -> BackendUrl | None:
    url = table.string("url")
    pool = table.integer("pool_size", DEFAULT_POOL_SIZE, minimum=1)
    parts = {k: table.string(k) for k in ("host", "db", "username", "password")}
    port = table.integer("port", 5432, minimum=1)
    table.finish()
    where = "storage_backend.backends.postgres.url"
    if url is not None and any(parts.values()):
        raise ConfigError("storage_backend.backends.postgres: give either url or host/port/db/username/password, not both")
    if url is None and parts["host"]:
        user = quote(parts["username"] or "postgres", safe="")
        password = "" if parts["password"] is None else ":" + quote(parts["password"], safe="")
        url = f"postgresql://{user}{password}@{parts['host']}:{port}/{quote(parts['db'] or 'postgres', safe='')}"
        where = "storage_backend.backends.postgres"
    if env.get(POSTGRES_ENV):
        url, where = env[POSTGRES_ENV], f"environment variable {POSTGRES_ENV}"
    return None if url is None else BackendUrl(url, pool, where)


def _redis(table: ConfigTable, env: Mapping[str, str]) -> BackendUrl | None:
    url = table.string("url")
    pool = table.integer("pool_size", DEFAULT_POOL_SIZE, minimum=1)
    table.finish()
    where = "storage_backend.backends.redis.url"
    if env.get(REDIS_ENV):
        url, where = env[REDIS_ENV], f"environment variable {REDIS_ENV}"
    return None if url is None else BackendUrl(url, pool, where)


def open_kv_store(config: StorageConfig) -> KeyValueStore:
    """The store (server backends connect on first use; `check` forces it)."""
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
    return SqliteStore(config.sqlite_path)


def session_sqlite_path(sqlite_path: Path) -> Path:
    """Where SQLite-stored KBS sessions live: a sibling file, `storage.sqlite3` -> `storage-sessions.sqlite3`."""
    return sqlite_path.with_name(f"{sqlite_path.stem}-sessions{sqlite_path.suffix}")


def describe_sessions(config: StorageConfig) -> str:
    """For logs: where `open_session_store` keeps the sessions."""
    if config.storage_type == "Sqlite":
        return f"Sqlite {session_sqlite_path(config.sqlite_path)} (synchronous=NORMAL)"
    return config.describe()


def open_session_store(config: StorageConfig) -> KeyValueStore:
    """The KBS session store: SQLite in its own file without fsync (sessions live minutes); others as configured."""
    if config.storage_type == "Sqlite":
        return SqliteStore(session_sqlite_path(config.sqlite_path), durable=False)
    return open_kv_store(config)
