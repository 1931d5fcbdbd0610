"""Error classes that only the KBS raises (the rest live in trustee_common.errors).

Both are HTTP routing errors and have no gRPC counterpart.
"""

from __future__ import annotations

from trustee_common.errors import TrusteeError


class MethodNotAllowedError(TrusteeError):
    """A known endpoint called with a method it does not serve (405)."""

    variant = "MethodNotAllowed"

    def __init__(self, detail: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allowed = allowed


class InvalidRequestPathError(TrusteeError):
    """A path outside every endpoint (upstream's `InvalidRequestPath`, 404)."""

    variant = "InvalidRequestPath"
