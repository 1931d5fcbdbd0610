"""PostgreSQL `KeyValueStore`: shared storage for several replicas, or a managed database.

Layout (upstream Trustee's): one table per namespace, named after it, with
`key TEXT PRIMARY KEY, value BYTEA`, plus our nullable `expires_at DOUBLE
PRECISION` (seconds since the epoch). Tables written by upstream Trustee
are migrated in place by adding that column. `trustee_namespaces` lists the
namespace tables this store manages and `trustee_meta` records the schema
version; a database from a newer version is refused.

The schema is created or migrated on the first operation, under an advisory
lock so that replicas starting together do not race. Every operation is one
statement on a connection from a psycopg pool, hence atomic:
`put(overwrite=False)` is an upsert that only replaces an expired row, and
`pop` is `DELETE ... RETURNING`, so exactly one concurrent caller gets the
row. Expiry times come from the caller's clock, as in the other backends.
Connection problems become `StorageError`s that never show the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from trustee_common.errors import MalformedRequestError, StorageError
from trustee_common.storage.base import Entry, validate_items, validate_key, validate_namespace
from trustee_common.storage.urls import redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
#: Namespaces whose tables are created at start (others on first use).
KNOWN_NAMESPACES = ("kbs", "repository", "kbs_protocol_session", "attestation_service_policy", "reference_value")
RESERVED_TABLES = frozenset({"trustee_meta", "trustee_namespaces"})
CONNECT_TIMEOUT_SECONDS = 10
_LOCK_ID = 0x7472757374656531  # "trustee1": serializes schema changes across replicas

_META = """
CREATE TABLE IF NOT EXISTS trustee_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trustee_namespaces (namespace TEXT PRIMARY KEY)
"""


_UPSERT = sql.SQL(
    "INSERT INTO {t} AS t(key, value, expires_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at RETURNING key"
)
# Replaces only an expired row: of concurrent writers exactly one inserts a live value.
_INSERT_UNLESS_LIVE = sql.SQL(
    "INSERT INTO {t} AS t(key, value, expires_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at "
    "WHERE t.expires_at IS NOT NULL AND t.expires_at <= %s RETURNING key"
)
_SELECT_KEYS = sql.SQL("SELECT key, NULL, NULL FROM {} WHERE expires_at IS NULL OR expires_at > %s")
_SELECT_ENTRIES = sql.SQL("SELECT key, value, expires_at FROM {} WHERE expires_at IS NULL OR expires_at > %s")


def _table(namespace: str) -> sql.Identifier:
    return sql.Identifier(namespace)


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._shown = redact_url(url)
        self._secret = _password(url)
        self._pool: AsyncConnectionPool | None = None
        self._ready: set[str] = set()
        self._open_lock = asyncio.Lock()

    # --- connection and schema -------------------------------------------------

    def _error(self, exc: BaseException) -> StorageError:
        return StorageError(f"PostgreSQL store {self._shown}: {_one_line(exc, self._secret)}")

    async def _connect_once(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        try:
            return await psycopg.AsyncConnection.connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL {self._shown}: {_one_line(exc, self._secret)}") from None

    async def _open(self) -> AsyncConnectionPool:
        async with self._open_lock:
            if self._pool is not None:
                return self._pool
            conn = await self._connect_once()
            try:
                await self._migrate(conn)
            except psycopg.Error as exc:
                raise self._error(exc) from None
            finally:
                await conn.close()
            pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size, open=False,
                                       kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS})
            try:
                await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            except PoolTimeout as exc:
                await pool.close()
                raise self._error(exc) from None
            self._pool = pool
            return pool

    async def _migrate(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await conn.execute(_META)
            row = await (await conn.execute("SELECT value FROM trustee_meta WHERE name = 'schema_version'")).fetchone()
            found = None if row is None else int(str(row[0]))
            if found is not None and found > SCHEMA_VERSION:
                raise StorageError(
                    f"PostgreSQL store {self._shown}: schema version {found} is newer than this version supports ({SCHEMA_VERSION})"
                )
            for namespace in KNOWN_NAMESPACES:
                await self._create_table(conn, namespace)
            await conn.execute(
                "INSERT INTO trustee_meta(name, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )
        if found is None:
            logger.info("created the storage schema (version %d) in %s", SCHEMA_VERSION, self._shown)
        self._ready.update(KNOWN_NAMESPACES)

    @staticmethod
    async def _create_table(conn: psycopg.AsyncConnection[tuple[object, ...]], namespace: str) -> None:
        table = _table(namespace)
        await conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value BYTEA NOT NULL)").format(table))
        await conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS expires_at DOUBLE PRECISION").format(table))
        await conn.execute("INSERT INTO trustee_namespaces(namespace) VALUES (%s) ON CONFLICT DO NOTHING", (namespace,))

    async def _namespace(self, pool: AsyncConnectionPool, namespace: str) -> None:
        if namespace in self._ready:
            return
        if namespace in RESERVED_TABLES:
            raise MalformedRequestError(f"storage namespace {namespace!r} is reserved")
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await self._create_table(conn, namespace)
        self._ready.add(namespace)

    async def _run(self, namespace: str | None, op: Callable[[psycopg.AsyncConnection[tuple[object, ...]]], Awaitable[T]]) -> T:
        pool = self._pool or await self._open()
        try:
            if namespace is not None:
                await self._namespace(pool, namespace)
            async with pool.connection() as conn:
                return await op(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc) from None

    async def check(self) -> None:
        """Connect and create or migrate the schema now (otherwise done by the first operation)."""
        if self._pool is None:
            await self._open()

    # --- KeyValueStore -----------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        query = sql.SQL("SELECT value FROM {} WHERE key = %s AND (expires_at IS NULL OR expires_at > %s)").format(_table(namespace))

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bytes | None:
            row = await (await conn.execute(query, (key, time.time()))).fetchone()
            return None if row is None else _bytes(row[0])

        return await self._run(namespace, op)

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        validate_key(namespace, key)
        query = (_UPSERT if overwrite else _INSERT_UNLESS_LIVE).format(t=_table(namespace))
        params: tuple[object, ...] = (key, bytes(value), expires_at) + (() if overwrite else (time.time(),))

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
            return await (await conn.execute(query, params)).fetchone() is not None

        return await self._run(namespace, op)

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        validate_items(namespace, items)
        query = _UPSERT.format(t=_table(namespace))
        rows = [(key, bytes(value), expires_at) for key, value, expires_at in items]

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(query, rows)

        if rows:
            await self._run(namespace, op)

    async def delete(self, namespace: str, key: str) -> bool:
        validate_key(namespace, key)
        query = sql.SQL("DELETE FROM {} WHERE key = %s").format(_table(namespace))

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
            return (await conn.execute(query, (key,))).rowcount > 0

        return await self._run(namespace, op)

    async def pop(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        query = sql.SQL("DELETE FROM {} WHERE key = %s RETURNING value, expires_at").format(_table(namespace))

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bytes | None:
            row = await (await conn.execute(query, (key,))).fetchone()
            if row is None or _expired(row[1], time.time()):
                return None
            return _bytes(row[0])

        return await self._run(namespace, op)

    async def list_keys(self, namespace: str) -> list[str]:
        return [e.key for e in await self._select(namespace, _SELECT_KEYS)]

    async def entries(self, namespace: str) -> list[Entry]:
        return await self._select(namespace, _SELECT_ENTRIES)

    async def _select(self, namespace: str, template: sql.SQL) -> list[Entry]:
        validate_namespace(namespace)
        query = template.format(_table(namespace))

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[Entry]:
            rows = await (await conn.execute(query, (time.time(),))).fetchall()
            found = [Entry(str(k), b"" if v is None else _bytes(v), None if e is None else float(str(e))) for k, v, e in rows]
            return sorted(found, key=lambda e: e.key)  # Python order, not the database collation

        return await self._run(namespace, op)

    async def namespaces(self) -> list[str]:
        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[str]:
            rows = await (await conn.execute("SELECT namespace FROM trustee_namespaces")).fetchall()
            return sorted(str(r[0]) for r in rows)

        return await self._run(None, op)

    async def purge_expired(self) -> int:
        now = time.time()

        async def op(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
            total = 0
            for (namespace,) in await (await conn.execute("SELECT namespace FROM trustee_namespaces")).fetchall():
                query = sql.SQL("DELETE FROM {} WHERE expires_at IS NOT NULL AND expires_at <= %s").format(_table(str(namespace)))
                total += max(0, (await conn.execute(query, (now,))).rowcount)
            return total

        return await self._run(None, op)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise StorageError(f"PostgreSQL store: unexpected value type {type(value).__name__}")


def _expired(expires_at: object, now: float) -> bool:
    return expires_at is not None and float(str(expires_at)) <= now


def _one_line(exc: BaseException, secret: str | None) -> str:
    """libpq messages span lines; errors here are one line, and never echo the password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(secret, "***") if secret else text


def _password(url: str) -> str | None:
    try:
        value = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return None
    return str(value) if value else None
