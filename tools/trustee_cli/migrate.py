"""`trustee migrate --from SRC --to DST`: copy all stored state between embedded storage and PostgreSQL.

SRC and DST are each one of:

- a `postgresql://` URL: every namespace in that database (resources in
  namespace `repository`);
- a path ending in `.sqlite3`, `.sqlite` or `.db`: one SQLite store file
  (`--resources DIR` adds a resource tree to it: read when it is the source,
  written when PostgreSQL is the source);
- any other path: a `trustee run` data directory, i.e. the SQLite files
  `{kbs,as,rvps}/storage.sqlite3` and the resource tree `kbs/repository/`.

Every live entry of every namespace is copied with its expiry, and every
resource file; the destination's values are overwritten, and its other
entries are kept. Going into a data directory, each namespace lands in the
store of the service that owns it (`NAMESPACE_OWNERS`; unknown namespaces,
such as verifier caches, go to the Attestation Service) and resources
become files under `kbs/repository/`. Stop the services first: a copy taken
while they write is not a consistent snapshot.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trustee_cli.configs import ServerPaths
from trustee_common.errors import ConfigError
from trustee_common.storage.base import ExportableStore
from trustee_common.storage.directory import DirectoryResourceStore
from trustee_common.storage.factory import POSTGRES_SCHEMES, check_postgres_url
from trustee_common.storage.kv_resources import RESOURCE_NAMESPACE
from trustee_common.storage.postgres import PostgresStore
from trustee_common.storage.sqlite import SqliteStore
from trustee_common.storage.urls import redact_url

logger = logging.getLogger(__name__)

SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
NAMESPACE_OWNERS = {
    "kbs": "kbs",
    "kbs_protocol_session": "kbs",
    RESOURCE_NAMESPACE: "kbs",
    "provisioner": "kbs",
    "attestation_service_policy": "as",
    "reference_value": "rvps",
}
DEFAULT_OWNER = "as"


@dataclass
class Side:
    """One end of a migration: stores by owning service (or `*` for one shared store) and a resource tree."""

    label: str
    stores: dict[str, ExportableStore]
    resources: DirectoryResourceStore | None = None
    copied: Counter[str] = field(default_factory=Counter)

    def store_for(self, namespace: str) -> ExportableStore:
        if "*" in self.stores:
            return self.stores["*"]
        return self.stores[NAMESPACE_OWNERS.get(namespace, DEFAULT_OWNER)]

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()


def is_postgres(spec: str) -> bool:
    return spec.partition("://")[0] in POSTGRES_SCHEMES and "://" in spec


def open_side(spec: str, *, source: bool, resources: Path | None = None) -> Side:
    """Open SRC (`source=True`: must exist, nothing is created) or DST."""
    if is_postgres(spec):
        if resources is not None:
            raise ConfigError("--resources goes with a SQLite file, not a PostgreSQL URL (resources live in the database)")
        check_postgres_url(spec, "--from" if source else "--to")
        return Side(redact_url(spec), {"*": PostgresStore(spec, pool_size=2)})
    path = Path(spec).absolute()
    if path.suffix in SQLITE_SUFFIXES:
        if source and not path.is_file():
            raise ConfigError(f"--from {path}: no such SQLite file")
        if resources is not None and source and not resources.is_dir():
            raise ConfigError(f"--resources {resources}: no such directory")
        tree = None if resources is None else DirectoryResourceStore(resources.absolute())
        return Side(str(path), {"*": SqliteStore(path)}, tree)
    if resources is not None:
        raise ConfigError("--resources goes with a SQLite file; a data directory has its resources in kbs/repository")
    return _data_dir(path, source=source)


def _data_dir(root: Path, *, source: bool) -> Side:
    paths = ServerPaths.under(root)
    files = {"kbs": paths.kbs_dir / "storage.sqlite3", "as": paths.as_dir / "storage.sqlite3", "rvps": paths.rvps_dir / "storage.sqlite3"}
    if source:
        if not root.is_dir():
            raise ConfigError(f"--from {root}: neither a postgresql:// URL, a SQLite file nor a data directory")
        files = {k: v for k, v in files.items() if v.is_file()}
        if not files and not paths.repository.is_dir():
            raise ConfigError(f"--from {root}: not a trustee data directory (no {{kbs,as,rvps}}/storage.sqlite3, no kbs/repository)")
    elif root.exists() and not root.is_dir():
        raise ConfigError(f"--to {root} exists and is not a directory")
    stores: dict[str, ExportableStore] = {name: SqliteStore(file) for name, file in files.items()}
    repository = paths.repository.is_dir() or not source
    return Side(str(root), stores, DirectoryResourceStore(paths.repository) if repository else None)


async def copy_all(source: Side, dest: Side) -> Counter[str]:
    """Copy every live entry and resource from `source` to `dest`; counts per namespace."""
    for store in source.stores.values():
        for namespace in await store.namespaces():
            for entry in await store.entries(namespace):
                if namespace == RESOURCE_NAMESPACE and dest.resources is not None:
                    await dest.resources.write(entry.key, entry.value)
                else:
                    await dest.store_for(namespace).put(namespace, entry.key, entry.value, expires_at=entry.expires_at)
                dest.copied[namespace] += 1
    if source.resources is not None:
        for path in await source.resources.list():
            data = await source.resources.read(path)
            if data is None:
                continue  # deleted meanwhile
            if dest.resources is not None:
                await dest.resources.write(path, data)
            else:
                await dest.store_for(RESOURCE_NAMESPACE).put(RESOURCE_NAMESPACE, path, data)
            dest.copied[RESOURCE_NAMESPACE] += 1
    return dest.copied


async def migrate(source_spec: str, dest_spec: str, *, resources: Path | None = None) -> str:
    """Run the copy and return the summary printed by `trustee migrate`."""
    if source_spec == dest_spec:
        raise ConfigError("--from and --to are the same")
    for spec, flag in ((source_spec, "--from"), (dest_spec, "--to")):
        if is_postgres(spec):
            check_postgres_url(spec, flag)
    # --resources is the tree of the SQLite-file side (of the source when both are files).
    from_postgres = is_postgres(source_spec)
    source = open_side(source_spec, source=True, resources=None if from_postgres else resources)
    try:
        dest = open_side(dest_spec, source=False, resources=resources if from_postgres else None)
        try:
            counts = await copy_all(source, dest)
        finally:
            await dest.close()
    finally:
        await source.close()
    lines = [f"  {namespace}: {count}" for namespace, count in sorted(counts.items())]
    return "\n".join([f"OK: copied {sum(counts.values())} entries from {source.label} to {dest.label}", *lines])
