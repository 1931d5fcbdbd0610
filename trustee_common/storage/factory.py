"""Build the configured `KeyValueStore` (the one place that knows the backends).

Config table `[storage_backend]`:
    storage_type = "Sqlite" (default) | "Memory"
    [storage_backend.backends.sqlite]
    path = "<file>"   (default: <data dir>/storage.sqlite3 given by the caller)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.storage.base import KeyValueStore
from trustee_common.storage.memory import MemoryStore
from trustee_common.storage.sqlite import SqliteStore

STORAGE_TYPES = ("Sqlite", "Memory")


@dataclass(frozen=True)
class StorageConfig:
    storage_type: str = "Sqlite"
    sqlite_path: Path = Path("storage.sqlite3")

    @classmethod
    def from_table(cls, table: ConfigTable, default_sqlite_path: Path) -> StorageConfig:
        kind = table.string("storage_type", "Sqlite") or "Sqlite"
        aliases = {t.lower(): t for t in STORAGE_TYPES}
        if kind.lower() not in aliases:
            raise ConfigError(f"storage_backend.storage_type {kind!r} is not one of {', '.join(STORAGE_TYPES)}")
        backends = table.table("backends")
        sqlite = backends.table("sqlite")
        path = Path(sqlite.string("path", str(default_sqlite_path)) or default_sqlite_path)
        sqlite.finish()
        backends.finish()
        table.finish()
        return cls(aliases[kind.lower()], path)


def open_kv_store(config: StorageConfig) -> KeyValueStore:
    if config.storage_type == "Memory":
        return MemoryStore()
    return SqliteStore(config.sqlite_path)
