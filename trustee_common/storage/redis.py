"""Redis `KeyValueStore` (`storage_type = "Redis"`, or KBS sessions only with `session_storage_type = "Redis"`).

Keys are `<namespace>:<key>` (upstream's layout). Expiry is Redis's own
(`SET ... PXAT`), so entries vanish by themselves and `purge_expired` only
checks the server answers. `put(overwrite=False)` is `SET NX` and `pop` is
`GETDEL` (Redis 6.2+): both atomic on the server, so of concurrent takers
exactly one gets the value. Redis is not durable by default (persistence is
its operator's choice), which is why `open_kv_store` warns when it holds
more than sessions. Errors become `StorageError`s that never show the password.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from trustee_common.errors import StorageError
from trustee_common.storage.base import Entry, validate_items, validate_key, validate_namespace
from trustee_common.storage.urls import redact_url

CONNECT_TIMEOUT_SECONDS = 10.0
SCAN_BATCH = 500


class RedisStore:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self._shown = redact_url(url)
        try:
            # A blocking pool: callers beyond `pool_size` wait for a connection instead of failing.
            pool = BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=CONNECT_TIMEOUT_SECONDS,
                                                   socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
            self._redis: Redis = Redis.from_pool(pool)
        except ValueError as exc:
            raise StorageError(f"Redis store {self._shown}: {exc}") from None

    def _error(self, exc: RedisError) -> StorageError:
        return StorageError(f"Redis store {self._shown}: {str(exc).strip() or type(exc).__name__}")

    async def check(self) -> None:
        """Fail now, with a clear message, when the server does not answer."""
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise self._error(exc) from None

    async def get(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        try:
            value = await self._redis.get(f"{namespace}:{key}")
        except RedisError as exc:
            raise self._error(exc) from None
        return _bytes(value)

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        validate_key(namespace, key)
        name = f"{namespace}:{key}"
        try:
            if expires_at is not None and expires_at <= time.time():
                # Already expired: invisible once stored, so storing it means removing the key.
                if not overwrite:
                    return not await self._redis.exists(name)
                await self._redis.delete(name)
                return True
            pxat = None if expires_at is None else int(expires_at * 1000)
            done = await self._redis.set(name, bytes(value), nx=not overwrite, pxat=pxat)
        except RedisError as exc:
            raise self._error(exc) from None
        return bool(done)

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        """One MULTI/EXEC: all entries or none; an entry already expired removes its key (as `put`)."""
        validate_items(namespace, items)
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, value, expires_at in items:
                    name = f"{namespace}:{key}"
                    if expires_at is not None and expires_at <= now:
                        pipe.delete(name)
                    else:
                        pipe.set(name, bytes(value), pxat=None if expires_at is None else int(expires_at * 1000))
                await pipe.execute()
        except RedisError as exc:
            raise self._error(exc) from None

    async def delete(self, namespace: str, key: str) -> bool:
        validate_key(namespace, key)
        try:
            return bool(await self._redis.delete(f"{namespace}:{key}"))
        except RedisError as exc:
            raise self._error(exc) from None

    async def pop(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        try:
            value = await self._redis.getdel(f"{namespace}:{key}")
        except RedisError as exc:
            raise self._error(exc) from None
        return _bytes(value)

    async def _scan(self, pattern: str) -> list[str]:
        try:
            return sorted({bytes(k).decode() async for k in self._redis.scan_iter(match=pattern, count=SCAN_BATCH)})
        except RedisError as exc:
            raise self._error(exc) from None

    async def list_keys(self, namespace: str) -> list[str]:
        validate_namespace(namespace)
        prefix = f"{namespace}:"
        return [name[len(prefix):] for name in await self._scan(prefix + "*")]

    async def namespaces(self) -> list[str]:
        return sorted({name.partition(":")[0] for name in await self._scan("*:*")})

    async def entries(self, namespace: str) -> list[Entry]:
        found = []
        for key in await self.list_keys(namespace):
            try:
                value = await self._redis.get(f"{namespace}:{key}")
                expires_ms = int(await self._redis.pexpiretime(f"{namespace}:{key}"))
            except RedisError as exc:
                raise self._error(exc) from None
            if value is not None:
                found.append(Entry(key, _bytes(value) or b"", expires_ms / 1000 if expires_ms > 0 else None))
        return found

    async def purge_expired(self) -> int:
        await self.check()
        return 0

    async def close(self) -> None:
        await self._redis.aclose()


def _bytes(value: bytes | str | None) -> bytes | None:
    """Values are stored as bytes and read back undecoded (`decode_responses` is off)."""
    return value.encode() if isinstance(value, str) else value
