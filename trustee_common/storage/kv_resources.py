"""`ResourceStore` over a `KeyValueStore`: resources in namespace `repository`, key `repo/type/tag`.

Upstream's `kvstorage` resource backend. Used when resources live in the
shared database (PostgreSQL) instead of a directory tree, so every KBS
replica serves the same resources. Writes are as atomic as the store's `put`.
"""

from __future__ import annotations

from trustee_common.storage.base import KeyValueStore
from trustee_common.storage.directory import parse_resource_path

RESOURCE_NAMESPACE = "repository"


class KvResourceStore:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    async def read(self, path: str) -> bytes | None:
        parse_resource_path(path)
        return await self._store.get(RESOURCE_NAMESPACE, path)

    async def write(self, path: str, data: bytes) -> None:
        parse_resource_path(path)
        await self._store.put(RESOURCE_NAMESPACE, path, data)

    async def delete(self, path: str) -> bool:
        parse_resource_path(path)
        return await self._store.delete(RESOURCE_NAMESPACE, path)

    async def list(self) -> list[str]:
        return await self._store.list_keys(RESOURCE_NAMESPACE)
