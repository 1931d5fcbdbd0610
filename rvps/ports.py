"""The reference-value provider interface, local (`rvps.service`) or remote (`rvps.client`).

The RVPS gRPC servicer serves any implementation, so the Attestation
Service proxies the RVPS by serving a remote client with the same servicer.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from rvps.core.record import ReferenceValue


class ReferenceValueProvider(Protocol):
    async def register(self, message: str) -> None:
        """Validate a registration message and store all its values (or none)."""

    async def query(self, name: str) -> str | None:
        """JSON text of the live value, or None when absent or expired."""

    async def delete(self, name: str) -> bool:
        """Remove a value; True if a record existed."""

    async def list(self, names: Collection[str] | None = None) -> list[ReferenceValue]:
        """Every live record (or those named in `names`), sorted by name."""

    async def epoch(self) -> str:
        """Opaque text that changes on every registration or deletion (`trustee_common.epoch`)."""
