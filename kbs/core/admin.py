"""Admin authentication and authorization (trustee-server.md 3.1).

Modes: `InsecureAllowAll` lets every admin request through, `DenyAll`
refuses every one (403), and `AuthenticatedAuthorization` needs
`Authorization: Bearer <JWT>` signed by one of the identity providers'
PEM public keys (Ed25519 → EdDSA, EC P-256 → ES256), with `exp` (60 s
leeway), the provider's `iss`/`aud` when configured, and a string `role`.
The first ACL entry whose role matches and whose anchored regex matches
the request path plus query allows the request.

A missing, forged, expired or unknown-key token is `AdminAuthError` (401);
a valid token whose role is not allowed is `AdminForbiddenError` (403).
Loading key files is the caller's job: this module takes PEM bytes.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk

from kbs.core.jws import CompactJws, check_expiry, parse_compact, verify_signature
from trustee_common.admin_token import admin_jws_alg
from trustee_common.errors import AdminAuthError, AdminForbiddenError, ConfigError

logger = logging.getLogger(__name__)

NO_ISSUER = "Cannot verify token with any of the issuers"


class AdminMode(enum.Enum):
    """`[admin] authorization_mode`."""

    AUTHENTICATED = "AuthenticatedAuthorization"
    ALLOW_ALL = "InsecureAllowAll"
    DENY_ALL = "DenyAll"


@dataclass(frozen=True)
class IdentityProvider:
    key: jwk.JWK
    alg: str
    issuer: str | None = None
    audience: str | None = None


@dataclass(frozen=True)
class AclEntry:
    role: str
    pattern: re.Pattern[str]


def identity_provider_from_pem(pem: bytes, *, issuer: str | None, audience: str | None, where: str) -> IdentityProvider:
    """An identity provider from a PEM public key; `ConfigError` names `where` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not a PEM public key: {exc}") from None
    alg = admin_jws_alg(key)
    if alg is None:
        raise ConfigError(f"{where}: admin public keys must be Ed25519 or EC P-256")
    return IdentityProvider(jwk.JWK.from_pyca(key), alg, issuer, audience)


def compile_acl(role: str, allowed_endpoints: str, where: str) -> AclEntry:
    """Upstream's rule: the regex must be anchored `^/kbs...$`."""
    if not allowed_endpoints.startswith("^/kbs") or not allowed_endpoints.endswith("$"):
        raise ConfigError(f"{where}: allowed_endpoints {allowed_endpoints!r} must start with '^/kbs' and end with '$'")
    try:
        return AclEntry(role, re.compile(allowed_endpoints))
    except re.error as exc:
        raise ConfigError(f"{where}: allowed_endpoints is not a valid regex: {exc}") from None


class AdminAuthorizer:
    def __init__(self, mode: AdminMode, providers: tuple[IdentityProvider, ...] = (), acls: tuple[AclEntry, ...] = ()) -> None:
        self.mode = mode
        self._providers = providers
        self._acls = acls

    def authorize(self, authorization: str | None, uri: str, now: float) -> str:
        """The caller's role (`*` without authentication) or an `AdminAuthError`/`AdminForbiddenError`."""
        if self.mode is AdminMode.ALLOW_ALL:
            return "*"
        if self.mode is AdminMode.DENY_ALL:
            raise AdminForbiddenError(f"admin access denied for endpoint {uri}: DenyAll authorization_mode is enabled")
        claims = self._authenticate(authorization, uri, now)
        role = claims.get("role")
        if not isinstance(role, str):
            raise AdminAuthError(f"admin access denied for endpoint {uri}: Missing required `role` claim in JWT")
        for entry in self._acls:
            if entry.role == role and entry.pattern.search(uri):
                return role
        raise AdminForbiddenError(f"admin access denied for endpoint {uri}: Role {role} not allowed for path {uri}")

    def _authenticate(self, authorization: str | None, uri: str, now: float) -> dict[str, Any]:
        token = bearer_token(authorization)
        if token is None:
            raise AdminAuthError(f"admin access denied for endpoint {uri}: no admin bearer token")
        try:
            parsed = parse_compact(token, AdminAuthError)
        except AdminAuthError as exc:
            raise AdminAuthError(f"admin access denied for endpoint {uri}: {exc.detail}") from None
        for index, provider in enumerate(self._providers):
            try:
                _check_with(provider, parsed, now)
            except AdminAuthError as exc:
                logger.info("admin token not accepted by identity provider %d: %s", index, exc.detail)
                continue
            return parsed.claims
        raise AdminAuthError(f"admin access denied for endpoint {uri}: {NO_ISSUER}")


def _check_with(provider: IdentityProvider, token: CompactJws, now: float) -> None:
    verify_signature(token, provider.key, provider.alg, AdminAuthError)
    check_expiry(token.claims, now, AdminAuthError)
    if provider.issuer is not None and token.claims.get("iss") != provider.issuer:
        raise AdminAuthError("issuer does not match")
    if provider.audience is not None:
        aud = token.claims.get("aud")
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
