"""In-process `KeyValueStore` (tests and `Memory` storage_type)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from trustee_common.storage.base import Entry, validate_items, validate_key, validate_namespace


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[bytes, float | None]] = {}

    def _live(self, namespace: str, key: str) -> bytes | None:
        entry = self._data.get((namespace, key))
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= time.time():
            del self._data[(namespace, key)]
            return None
        return value

    async def get(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        return self._live(namespace, key)

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        validate_key(namespace, key)
        if not overwrite and self._live(namespace, key) is not None:
            return False
        self._data[(namespace, key)] = (bytes(value), expires_at)
        return True

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        validate_items(namespace, items)
        for key, value, expires_at in items:
            self._data[(namespace, key)] = (bytes(value), expires_at)

    async def delete(self, namespace: str, key: str) -> bool:
        validate_key(namespace, key)
        return self._data.pop((namespace, key), None) is not None

    async def pop(self, namespace: str, key: str) -> bytes | None:
        validate_key(namespace, key)
        value = self._live(namespace, key)
        self._data.pop((namespace, key), None)
        return value

    async def list_keys(self, namespace: str) -> list[str]:
        validate_namespace(namespace)
        return sorted(k for (ns, k) in list(self._data) if ns == namespace and self._live(ns, k) is not None)

    async def purge_expired(self) -> int:
        now = time.time()
        expired = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
        for k in expired:
            del self._data[k]
        return len(expired)

    async def namespaces(self) -> list[str]:
        return sorted({ns for (ns, _) in self._data})

    async def entries(self, namespace: str) -> list[Entry]:
        keys = await self.list_keys(namespace)
        return [Entry(k, *self._data[(namespace, k)]) for k in keys if (namespace, k) in self._data]

    async def close(self) -> None:
        self._data.clear()
