"""The plugin interface: what the gateway asks of every plugin, and the request it hands over.

Errors a plugin raises are `TrusteeError`s: `PluginInternalError` (401, as
upstream) when it refuses or fails the request, `UpstreamError` (503)
naming the plugin when the device or service behind it does not answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PluginRequest:
    """One request to `/kbs/v0/<plugin>/<path...>?<query>`: the path after the plugin name, decoded."""

    method: str
    path: tuple[str, ...]
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class ClientPlugin(Protocol):
    #: The first URL segment it serves (`[[plugins]] name`).
    name: str

    async def validate_auth(self, request: PluginRequest) -> bool:
        """True: the request needs the admin credential; False: an attestation token and the resource policy."""
        ...

    async def encrypted(self, request: PluginRequest) -> bool:
        """True: the answer is JWE-encrypted to the token's TEE key (only asked for token-gated requests)."""
        ...

    async def handle(self, request: PluginRequest, init_data: Any = None) -> bytes:
        """The answer body. `init_data`: the token's init-data claims (token-gated requests), else None."""
        ...

    async def close(self) -> None:
        """Release the device or channels (at shutdown)."""
        ...
