"""Fill a not-yet-started embedded deployment with many resources, sessions and reference values, fast.

Rows are written in the servers' own formats into the files they will
open: resources as files of the KBS's resource directory (the
`DirectoryResourceStore` layout `<repo>/<type>/<tag>`), live `Authed`
sessions (`kbs.core.session.encode_session`) in the KBS's session SQLite
file, and reference values (`rvps.core.record.ReferenceValue`) in the
RVPS's SQLite file. Each SQLite file is created by `SqliteStore` (its
schema), then filled in one transaction: one `put` per row would take
minutes at 100,000 rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from bench.cluster import Cluster
from kbs.core.session import SESSION_NAMESPACE, encode_session, new_session
from rvps.core.record import NAMESPACE as RV_NAMESPACE
from rvps.core.record import ReferenceValue
from trustee_common.messages import PROTOCOL_VERSION, Request
from trustee_common.storage.factory import session_sqlite_path
from trustee_common.storage.sqlite import SqliteStore

SESSION_LIFETIME_SECONDS = 3600.0
RESOURCES_PER_TYPE = 1000
Row = tuple[str, str, bytes, float | None]


def bulk_insert(path: Path, rows: Iterable[Row]) -> None:
    asyncio.run(SqliteStore(path).close())  # creates the file and its schema as the servers expect
    with contextlib.closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO kv(namespace, key, value, expires_at) VALUES (?,?,?,?)", rows)
        conn.execute("COMMIT")


def session_rows(count: int) -> Iterable[Row]:
    now = time.time()
    request = Request(PROTOCOL_VERSION, "sample", "")
    for _ in range(count):
        session = new_session(request, now=now, lifetime=SESSION_LIFETIME_SECONDS, random_bytes=os.urandom)
        yield SESSION_NAMESPACE, session.id, encode_session(session), session.expires_at


def reference_value_rows(count: int) -> Iterable[Row]:
    expiration = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    for i in range(count):
        record = ReferenceValue(f"bench.scale.value-{i}", [f"{i:064x}"], expiration)
        yield RV_NAMESPACE, record.name, record.to_bytes(), None


def write_resources(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / "scale" / f"type{i // RESOURCES_PER_TYPE}"
        if i % RESOURCES_PER_TYPE == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"key{i % RESOURCES_PER_TYPE}").write_bytes(os.urandom(32))


def sqlite_path(config: dict[str, object]) -> Path:
    backend = config["storage_backend"]
    assert isinstance(backend, dict)
    return Path(backend["backends"]["sqlite"]["path"])


def populate(cluster: Cluster, *, resources: int, sessions: int, reference_values: int) -> None:
    """Write the rows; `cluster` must use embedded storage and not be started yet."""
    if cluster.storage_url is not None:
        raise ValueError("the scale scenario fills embedded storage only")
    paths = cluster.paths
    write_resources(paths.repository, resources)
    kbs_storage = sqlite_path(cluster.kbs_config(cluster.kbs_ports[0], cluster.as_ports[0]))
    bulk_insert(session_sqlite_path(kbs_storage), session_rows(sessions))
    bulk_insert(paths.rvps_dir / "storage.sqlite3", reference_value_rows(reference_values))
