"""Admin authentication and authorization (trustee-server.md 3.1).

Modes: `InsecureAllowAll` lets every admin request through, `DenyAll`
refuses every one (403), and `AuthenticatedAuthorization` needs
`Authorization: Bearer <JWT>` verified by one of the identity providers'
keys (`kbs.core.admin_keys`: the header `alg` must be one the key's type
allows), with valid time claims (`kbs.core.jws.check_time_claims`), the
provider's `iss`/`aud` when configured, and a string `role`.

Authorization matches the *target*: the decoded, normalised request path
the handlers use, without the query string (`kbs.core.request_path`
explains why). The first ACL entry whose role
equals the token's, whose method list (if any) holds the request method
and whose anchored regex matches the whole target allows the request.

A missing, forged, expired or unknown-key token is `AdminAuthError` (401);
a valid token whose role is not allowed is `AdminForbiddenError` (403).
Loading key files is the caller's job.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kbs.core.admin_keys import VerificationKey
from kbs.core.jws import CompactJws, check_time_claims, parse_compact, verify_signature
from trustee_common.errors import AdminAuthError, AdminForbiddenError, ConfigError

logger = logging.getLogger(__name__)

NO_ISSUER = "Cannot verify token with any of the issuers"
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
MAX_SHOWN_TARGET = 256


class AdminMode(enum.Enum):
    """`[admin] authorization_mode`."""

    AUTHENTICATED = "AuthenticatedAuthorization"
    ALLOW_ALL = "InsecureAllowAll"
    DENY_ALL = "DenyAll"


@dataclass(frozen=True)
class IdentityProvider:
    keys: tuple[VerificationKey, ...]
    issuer: str | None = None
    audience: str | None = None


@dataclass(frozen=True)
class AclEntry:
    role: str
    pattern: re.Pattern[str]
    #: None: every method (upstream); else the upper-case methods allowed.
    methods: frozenset[str] | None = None

    def allows(self, role: str, method: str, target: str) -> bool:
        if role != self.role or (self.methods is not None and method not in self.methods):
            return False
        return self.pattern.fullmatch(target) is not None


def compile_acl(role: str, allowed_endpoints: str, where: str, allowed_methods: Sequence[str] | None = None) -> AclEntry:
    """Upstream's rule: the regex must be anchored `^/kbs...$`; `allowed_methods` are HTTP method names."""
    if not allowed_endpoints.startswith("^/kbs") or not allowed_endpoints.endswith("$"):
        raise ConfigError(f"{where}: allowed_endpoints {allowed_endpoints!r} must start with '^/kbs' and end with '$'")
    try:
        pattern = re.compile(allowed_endpoints)
    except re.error as exc:
        raise ConfigError(f"{where}: allowed_endpoints is not a valid regex: {exc}") from None
    if allowed_methods is None:
        return AclEntry(role, pattern)
    unknown = [m for m in allowed_methods if m not in HTTP_METHODS]
    if unknown or not allowed_methods:
        names = ", ".join(sorted(HTTP_METHODS))
        raise ConfigError(f"{where}: allowed_methods must be a non-empty list of {names} (upper case), got {list(allowed_methods)}")
    return AclEntry(role, pattern, frozenset(allowed_methods))


def _shown(target: str) -> str:
    return target if len(target) <= MAX_SHOWN_TARGET else target[:MAX_SHOWN_TARGET] + "..."


class AdminAuthorizer:
    def __init__(self, mode: AdminMode, providers: tuple[IdentityProvider, ...] = (), acls: tuple[AclEntry, ...] = ()) -> None:
        self.mode = mode
        self._providers = providers
        self._acls = acls

    def authorize(self, authorization: str | None, method: str, target: str, now: float) -> str:
        """The caller's role (`*` without authentication) or an `AdminAuthError`/`AdminForbiddenError`."""
        where = f"admin access denied for {method} {_shown(target)}"
        if self.mode is AdminMode.ALLOW_ALL:
            return "*"
        if self.mode is AdminMode.DENY_ALL:
            raise AdminForbiddenError(f"{where}: DenyAll authorization_mode is enabled")
        claims = self._authenticate(authorization, where, now)
        role = claims.get("role")
        if not isinstance(role, str):
            raise AdminAuthError(f"{where}: Missing required `role` claim in JWT")
        if any(entry.allows(role, method, target) for entry in self._acls):
            return role
        raise AdminForbiddenError(f"{where}: Role {_shown(role)} not allowed for {method} {_shown(target)}")

    def _authenticate(self, authorization: str | None, where: str, now: float) -> dict[str, Any]:
        token = bearer_token(authorization)
        if token is None:
            raise AdminAuthError(f"{where}: no admin bearer token")
        try:
            parsed = parse_compact(token, AdminAuthError)
        except AdminAuthError as exc:
            raise AdminAuthError(f"{where}: {exc.detail}") from None
        reasons: list[str] = []
        for index, provider in enumerate(self._providers):
            if not _signed_by(provider.keys, parsed):
                logger.info("admin token not signed by a key of identity provider %d", index)
                continue
            try:
                _check_claims(provider, parsed.claims, now)
            except AdminAuthError as exc:
                logger.info("admin token not accepted by identity provider %d: %s", index, exc.detail)
                reasons.append(exc.detail)
                continue
            return parsed.claims
        # The signature verified for a provider: the token's holder may learn why its claims failed.
        raise AdminAuthError(f"{where}: {NO_ISSUER}" + (f" ({reasons[0]})" if reasons else ""))


def _signed_by(keys: tuple[VerificationKey, ...], token: CompactJws) -> bool:
    for key in keys:
        alg = key.accepts(token.header)
        if alg is None:
            continue
        try:
            verify_signature(token, key.key, alg, AdminAuthError)
        except AdminAuthError:
            continue
        return True
    return False


def _check_claims(provider: IdentityProvider, claims: dict[str, Any], now: float) -> None:
    check_time_claims(claims, now, AdminAuthError)
    if provider.issuer is not None and claims.get("iss") != provider.issuer:
        raise AdminAuthError("issuer does not match")
    if provider.audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if provider.audience not in audiences:
            raise AdminAuthError("audience does not match")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
