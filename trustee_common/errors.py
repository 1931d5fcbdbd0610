"""The one exception hierarchy of the project.

Every error a component raises on purpose is a `TrusteeError`. Each class
carries `variant`, the stable name that the KBS puts in its error `type`
URL (`https://github.com/confidential-containers/kbs/errors/<variant>`) and
that gRPC servers put in the `trustee-error-variant` trailer, so a client
can rebuild the same class on its side (`error_from_variant`).

Status codes are not decided here: each transport maps classes to its own
codes in one table (`kbs.http.errors`, `trustee_common.grpc_errors`).
Upstream's variant names are used where upstream has one; the others are
listed in docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypeVar

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
#: Characters of one client-supplied value quoted in an error detail.
CLIENT_TEXT_CHARS = 200
#: Characters of a whole error detail (a safety net for transports with small limits).
MAX_DETAIL_CHARS = 2000
ELLIPSIS = "…"


def clip(value: object, limit: int = CLIENT_TEXT_CHARS) -> str:
    """`value` as text cut to `limit` characters with an ellipsis: how client input is quoted in errors."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def clip_repr(value: object, limit: int = CLIENT_TEXT_CHARS) -> str:
    """`repr(value)` cut like `clip` (quotes kept visible for strings)."""
    return clip(repr(value), limit)


class TrusteeError(Exception):
    """Root of every deliberate error. `detail` is safe to show to the caller."""

    variant: ClassVar[str] = "InternalError"
    #: True when `detail` may name internal file paths or service addresses:
    #: callers then get `public_detail`, the server log keeps `detail`.
    internal: ClassVar[bool] = False

    def __init__(self, detail: str) -> None:
        detail = clip(detail, MAX_DETAIL_CHARS)
        super().__init__(detail)
        self.detail = detail

    @property
    def public_detail(self) -> str:
        """The detail as a remote caller may see it."""
        if self.internal:
            return f"{self.variant}: the server could not complete the request (details in its log)"
        return self.detail

    def to_json(self) -> dict[str, str]:
        """The KBS error body: `{"type": <URL>, "detail": <text>}`."""
        return {"type": ERROR_TYPE_PREFIX + self.variant, "detail": self.public_detail}


# --- the caller sent something malformed -------------------------------------


class MalformedRequestError(TrusteeError):
    """Bad JSON, missing field, bad path segment, unknown TEE, bad version."""

    variant = "MalformedRequest"


class PayloadTooLargeError(TrusteeError):
    variant = "PayloadTooLarge"


class InvalidPolicyError(TrusteeError):
    """A Rego policy that does not parse or compile, or a bad policy body."""

    variant = "PolicyEngineError"


class InvalidReferenceValueError(TrusteeError):
    """A reference-value message that is not valid."""

    variant = "RvpsError"


# --- authentication and authorization ----------------------------------------


class TokenNotFoundError(TrusteeError):
    variant = "TokenNotFound"


class TokenVerifierError(TrusteeError):
    """An attestation token that is forged, expired, or lacks the TEE key."""

    variant = "TokenVerifierError"


class StaleAttestationError(TokenVerifierError):
    """A valid token appraised before the attestation policies or reference values last changed.

    The guest must attest again (a fresh appraisal under the current policy);
    guests that re-attest on `TokenVerifierError` do so for this one too.
    """

    variant = "StaleAttestation"


class AttestationError(TrusteeError):
    """Evidence rejected, not bound to the nonce and key, or session invalid."""

    variant = "AttestationError"


class EvidenceError(AttestationError):
    """A verifier rejected the evidence itself (parse, signature, binding)."""


class AdminAuthError(TrusteeError):
    """Missing, forged, expired or unknown-key admin token (401)."""

    variant = "AdminAuthAccess"


class AdminForbiddenError(TrusteeError):
    """A valid admin token whose role the ACL does not allow (403)."""

    variant = "AdminAuthAccess"


class PolicyDenyError(TrusteeError):
    variant = "PolicyDeny"


# --- not found ---------------------------------------------------------------


class PluginNotFoundError(TrusteeError):
    variant = "PluginNotFound"


class PluginInternalError(TrusteeError):
    """A KBS plugin refused or failed a request (an HSM operation failed, an external plugin answered a non-2xx
    `status_code`); upstream's name and status (401)."""

    variant = "PluginInternalError"


class ResourceNotFoundError(TrusteeError):
    variant = "ResourceNotFound"


class PolicyNotFoundError(TrusteeError):
    variant = "PolicyNotFound"


class ReferenceValueNotFoundError(TrusteeError):
    variant = "ReferenceValueNotFound"


# --- container images (CDH image pull and keyprovider) ------------------------


class ImageNotFoundError(TrusteeError):
    """A registry answered that the image, tag or blob does not exist."""

    variant = "ImageNotFound"


class ImageIntegrityError(TrusteeError):
    """An image that is not what it claims: a blob whose digest differs from its descriptor, an
    encrypted layer whose HMAC, key unwrap (wrong key-encryption key) or decrypted digest fails."""

    variant = "ImageIntegrity"


class UnsafeImageError(TrusteeError):
    """An image refused as unsafe to unpack: a layer entry escaping the rootfs (`..`, absolute
    path, through a symlink), a device node, an oversized manifest, layer or image."""

    variant = "UnsafeImage"


# --- our side or our dependencies --------------------------------------------


class UpstreamError(TrusteeError):
    """A service this one depends on (AS, RVPS, KBS) is unreachable or failed."""

    variant = "UpstreamUnavailable"


class PolicyEngineUnavailableError(TrusteeError):
    """A Rego compile or evaluation that exceeded its time limit, or a policy worker that failed."""

    variant = "PolicyEngineUnavailable"


class ServerBusyError(TrusteeError):
    """The server is at its in-flight request limit and refused the request unprocessed: retry later.

    `retry_after` is the delay in seconds the server asks for (the HTTP
    `Retry-After` header); None when it named none.
    """

    variant = "ServerBusy"

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ConfigError(TrusteeError):
    """A configuration file, key or flag that is not valid."""

    variant = "ConfigError"


class StorageError(TrusteeError):
    variant = "StorageError"
    internal = True


class InternalError(TrusteeError):
    variant = "InternalError"
    internal = True


_Status = TypeVar("_Status")


def mapped_status(table: Mapping[type[TrusteeError], _Status], error: TrusteeError, default: _Status) -> _Status:
    """A transport's status for `error`: the entry of its most specific class in `table`, else `default`."""
    return next((table[cls] for cls in type(error).__mro__ if cls in table), default)


def _all_subclasses(cls: type[TrusteeError]) -> list[type[TrusteeError]]:
    found: list[type[TrusteeError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_from_variant(variant: str, detail: str, *, forbidden: bool = False) -> TrusteeError:
    """Rebuild an error received over a transport from its variant name.

    `AdminAuthAccess` is shared by the 401 and 403 cases; `forbidden`
    selects the 403 one. An unknown variant becomes `UpstreamError`.
    """
    if variant == AdminAuthError.variant:
        return AdminForbiddenError(detail) if forbidden else AdminAuthError(detail)
    for cls in _all_subclasses(TrusteeError):
        if cls.variant == variant and cls is not EvidenceError:
            return cls(detail)
    return UpstreamError(detail)
