"""Upstream Trustee's `LocalFs` and `LocalJson` storage types, served by our SQLite store.

Upstream keeps, for each namespace,

- `LocalFs`: one file per entry, `<dir_path>/<namespace>/<key>` with every
  '/' of the key written as the four characters `\\x2F`;
- `LocalJson`: one JSON object per namespace, the file
  `<file_dir_path>/<namespace>`, mapping each key to its value in base64url
  (with padding).

Neither layout can give what our services rely on: an atomic take, so that
a session nonce is used once even with several processes; expiries;
consistent reads across processes. So both types are served by the SQLite
backend (`SqliteStore`), with its file in the configured directory:
`<dir>/trustee.sqlite3` (KBS sessions: `<dir>/trustee-sessions.sqlite3`).

When that file is new, the entries an upstream Trustee left in the
directory are copied into it once (`sqlite.import_once`: one transaction,
so of several processes starting together exactly one copies). Upstream's
namespaces and keys are ours, except that a reference-value name which is
not a storage key is stored under `_rvps-sha256/<hex>` as the RVPS does.
RCAR sessions (`kbs_protocol_session`) are not copied. Keys our store
cannot hold are skipped with a warning. Upstream's files are only read,
never changed or removed. From then on the SQLite file is the data:
changes made later to upstream's files are not seen.

An import larger than `MAX_IMPORT_ENTRIES` entries, `MAX_IMPORT_BYTES` in
all, `MAX_IMPORT_VALUE_BYTES` for one LocalFs file or
`MAX_IMPORT_JSON_BYTES` for one LocalJson file, or a LocalJson file that is
not such an object, is refused with a `StorageError` naming the file:
nothing is imported and the service does not start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from trustee_common.bounded import DEFAULT_MAX_BYTES, loads_json
from trustee_common.errors import MalformedRequestError, StorageError, clip_repr
from trustee_common.storage.base import validate_key, validate_namespace
from trustee_common.storage.sqlite import ImportRow, SqliteStore, import_once

logger = logging.getLogger(__name__)

LAYOUTS = ("LocalFs", "LocalJson")
#: Upstream's defaults for `backends.local_fs.dir_path` and `backends.local_json.file_dir_path`.
DEFAULT_DIRS = {
    "LocalFs": Path("/opt/confidential-containers/storage/local_fs"),
    "LocalJson": Path("/opt/confidential-containers/storage/local_json"),
}
DATABASE_NAME = "trustee.sqlite3"
#: Upstream's LocalFs spelling of '/' in file names.
SLASH = "\\x2F"
#: Not imported: sessions live minutes, and a guest whose session is lost just runs /auth again.
SKIPPED_NAMESPACES = frozenset({"kbs_protocol_session"})
REFERENCE_VALUE_NAMESPACE = "reference_value"
#: The RVPS's key prefix for names that are not storage keys (rvps/core/record.py `storage_key`).
HASHED_KEY_PREFIX = "_rvps-sha256/"

MAX_IMPORT_ENTRIES = 100_000
MAX_IMPORT_BYTES = 256 * 1024 * 1024
MAX_IMPORT_VALUE_BYTES = DEFAULT_MAX_BYTES
MAX_IMPORT_JSON_BYTES = 4 * DEFAULT_MAX_BYTES
#: Skipped keys named in the warning (the count covers all).
MAX_SHOWN_SKIPPED = 5

_URL_SAFE_PADDED = re.compile(r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?$")


def database_path(directory: Path) -> Path:
    return directory / DATABASE_NAME


def open_local(layout: str, directory: Path) -> SqliteStore:
    """The store of `storage_type` `layout` ("LocalFs" or "LocalJson") over `directory`, importing upstream's data once."""
    if not directory.exists():
        try:
            directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass  # another process created it meanwhile
        except OSError as exc:
            raise StorageError(f"storage {layout}: cannot create {directory}: {exc}") from exc
    path = database_path(directory)
    reader = _Reader(layout, directory)
    rows = import_once(path, f"{layout} {directory}", reader.read)
    if rows:
        logger.info("storage %s: imported upstream Trustee data from %s into %s: %s (upstream's files are left unchanged)",
                    layout, directory, path, _counts(rows))
    if rows is not None and reader.skipped:
        shown = ", ".join(reader.skipped[:MAX_SHOWN_SKIPPED])
        logger.warning("storage %s: %d upstream entr%s not imported (not a valid storage key): %s", layout, len(reader.skipped),
                       "y" if len(reader.skipped) == 1 else "ies", shown)
    return SqliteStore(path)


def our_key(namespace: str, key: str) -> str | None:
    """The key an upstream entry gets here, or None when our store cannot hold it."""
    if namespace == REFERENCE_VALUE_NAMESPACE:
        return reference_value_key(key)
    try:
        validate_key(namespace, key)
    except MalformedRequestError:
        return None
    return key


def reference_value_key(name: str) -> str | None:
    """The RVPS's key for a reference-value name (the same rule as rvps.core.record.storage_key)."""
    if not name or not name.isprintable() or len(name.encode("utf-8", "replace")) > 1024:
        return None
    if not name.startswith(HASHED_KEY_PREFIX):
        try:
            validate_key(REFERENCE_VALUE_NAMESPACE, name)
        except MalformedRequestError:
            pass
        else:
            return name
    return HASHED_KEY_PREFIX + hashlib.sha256(name.encode("utf-8")).hexdigest()


def _counts(rows: list[ImportRow]) -> str:
    counts = Counter(namespace for namespace, _, _ in rows)
    return ", ".join(f"{namespace} {count}" for namespace, count in sorted(counts.items()))


def _is_namespace(name: str) -> bool:
    try:
        validate_namespace(name)
    except MalformedRequestError:
        return False
    return name not in SKIPPED_NAMESPACES


class _Reader:
    """Reads upstream's entries under the import limits; keys our store cannot hold go to `skipped`."""

    def __init__(self, layout: str, directory: Path) -> None:
        self.layout = layout
        self.directory = directory
        self.skipped: list[str] = []
        self._rows: list[ImportRow] = []
        self._bytes = 0

    def read(self) -> list[ImportRow]:
        self._rows, self._bytes, self.skipped = [], 0, []
        entries = self._local_fs() if self.layout == "LocalFs" else self._local_json()
        for namespace, key, value in entries:
            self._add(namespace, key, value)
        return self._rows

    def _refuse(self, where: Path, why: str) -> StorageError:
        return StorageError(f"storage {self.layout}: cannot import upstream data from {where}: {why} "
                            "(nothing was imported; the files are unchanged)")

    def _add(self, namespace: str, key: str, value: bytes) -> None:
        mapped = our_key(namespace, key)
        if mapped is None:
            self._skip(namespace, key)
            return
        if len(self._rows) >= MAX_IMPORT_ENTRIES:
            raise self._refuse(self.directory, f"more than {MAX_IMPORT_ENTRIES} entries")
        self._bytes += len(value)
        if self._bytes > MAX_IMPORT_BYTES:
            raise self._refuse(self.directory, f"more than {MAX_IMPORT_BYTES} bytes in all")
        self._rows.append((namespace, mapped, value))

    def _skip(self, namespace: str, key: str) -> None:
        self.skipped.append(f"{namespace}/{clip_repr(key, 80)}")

    def _namespaces(self, want_dirs: bool) -> Iterator[tuple[str, Path]]:
        """Upstream's namespace directories (LocalFs) or files (LocalJson), sorted; anything else is not upstream's."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise self._refuse(self.directory, str(exc)) from exc
        for name in names:
            path = self.directory / name
            if _is_namespace(name) and (path.is_dir() if want_dirs else path.is_file()):
                yield name, path

    def _local_fs(self) -> Iterator[tuple[str, str, bytes]]:
        for namespace, folder in self._namespaces(want_dirs=True):
            try:
                names = sorted(os.listdir(folder))
            except OSError as exc:
                raise self._refuse(folder, str(exc)) from exc
            if len(names) > MAX_IMPORT_ENTRIES:
                raise self._refuse(folder, f"more than {MAX_IMPORT_ENTRIES} entries")
            for name in names:
                key = name.replace(SLASH, "/")
                if our_key(namespace, key) is None:  # not read at all (e.g. an editor's `.swp` file)
                    self._skip(namespace, key)
                    continue
                value = self._read_file(folder / name, MAX_IMPORT_VALUE_BYTES)
                if value is not None:
                    yield namespace, key, value

    def _local_json(self) -> Iterator[tuple[str, str, bytes]]:
        for namespace, file in self._namespaces(want_dirs=False):
            data = self._read_file(file, MAX_IMPORT_JSON_BYTES)
            if data is None:
                continue
            try:
                items = loads_json(data, str(file), max_bytes=MAX_IMPORT_JSON_BYTES, max_depth=2, error=StorageError)
            except StorageError as exc:
                raise self._refuse(file, exc.detail) from None
            if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
                raise self._refuse(file, "not a JSON object of base64url strings")
            for key, text in sorted(items.items()):
                yield namespace, key, self._decode(file, key, text)

    def _decode(self, file: Path, key: str, text: str) -> bytes:
        # Upstream writes URL-safe base64 with padding; a value its own reader would refuse is refused here too.
        if not _URL_SAFE_PADDED.fullmatch(text):
            raise self._refuse(file, f"the value of {clip_repr(key, 80)} is not base64url with padding")
        try:
            return base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            raise self._refuse(file, f"the value of {clip_repr(key, 80)} is not base64url with padding") from None

    def _read_file(self, path: Path, limit: int) -> bytes | None:
        """A regular file's bytes (symbolic links followed, as upstream does), or None for anything else."""
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # never open a FIFO or device: that could block the start
                return None
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            return None  # a dangling symbolic link
        except OSError as exc:
            raise self._refuse(path, exc.strerror or str(exc)) from exc
        if len(data) > limit:
            raise self._refuse(path, f"larger than {limit} bytes")
        return data
