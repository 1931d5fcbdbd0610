"""The storage Protocols and the key rules every backend enforces."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from trustee_common.errors import MalformedRequestError

# Upstream's key-value-storage rule: [A-Za-z0-9-_./], not starting with '.' or '/'.
_KEY = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-./]*$")
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_\-]*$")
MAX_KEY_LENGTH = 512
MAX_NAMESPACE_LENGTH = 63  # PostgreSQL's identifier limit (a table per namespace)


def validate_namespace(namespace: str) -> None:
    if not _NAMESPACE.fullmatch(namespace) or len(namespace) > MAX_NAMESPACE_LENGTH:
        raise MalformedRequestError(f"invalid storage namespace {namespace!r}")


def validate_key(namespace: str, key: str) -> None:
    validate_namespace(namespace)
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise MalformedRequestError(f"invalid storage key {key!r}")


def validate_items(namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
    """`validate_key` for every key of a `put_many`, before anything is written."""
    for key, _, _ in items:
        validate_key(namespace, key)


class KeyValueStore(Protocol):
    """Namespaced bytes store. Every write is atomic: a reader sees the old or the new value."""

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The value, or None when absent or past its `expires_at`."""

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        """Store `value`; with `overwrite=False` an existing live key is kept and False returned."""

    async def put_many(self, namespace: str, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        """Store every `(key, value, expires_at)`, overwriting, all or none (one transaction where the
        backend has them): for writers that batch, e.g. attestation reports, one commit for many entries."""

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key; True if it existed."""

    async def pop(self, namespace: str, key: str) -> bytes | None:
        """Atomically read and remove the key (exactly one concurrent caller gets it)."""

    async def list_keys(self, namespace: str) -> list[str]:
        """Live keys of the namespace, sorted."""

    async def purge_expired(self) -> int:
        """Delete every entry past its `expires_at`; returns how many."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored value with its expiry, as `ExportableStore.entries` returns it."""

    key: str
    value: bytes
    expires_at: float | None


@runtime_checkable
class ExportableStore(KeyValueStore, Protocol):
    """A store whose whole content can be enumerated (for `trustee migrate`)."""

    async def namespaces(self) -> list[str]:
        """Every namespace that holds (or held) entries, sorted."""

    async def entries(self, namespace: str) -> list[Entry]:
        """The live entries of the namespace, sorted by key."""


class ResourceStore(Protocol):
    """KBS resources addressed by `repo/type/tag`."""

    async def read(self, path: str) -> bytes | None: ...

    async def write(self, path: str, data: bytes) -> None: ...

    async def delete(self, path: str) -> bool: ...

    async def list(self) -> list[str]: ...
