"""The CDH core: resource URIs to resource bytes, with a cached KBS token.

Upstream CDH asks the AA for a fresh token (a full attestation) on every
GetResource. This hub keeps the last token and its TEE key pair across
calls, and replaces it when it is about to expire (time is an explicit
input through `clock`) or when the KBS rejects it; a rejected fresh token
is final, so each call makes at most two KBS requests and one AA call.
The AA and the KBS are reached through the `TokenSource` and
`ResourceGetter` Protocols (adapters in `guest.cdh.kbs`); no I/O here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from guest.attesters.tpm_keys import load_tee_key_pair
from guest.resource_uri import ResourceUri
from trustee_common.b64 import url_decode
from trustee_common.bounded import loads_json
from trustee_common.errors import (
    AttestationError,
    ConfigError,
    PolicyDenyError,
    TokenNotFoundError,
    TokenVerifierError,
    TrusteeError,
    UpstreamError,
)
from trustee_common.jose import TeeKeyPair

logger = logging.getLogger(__name__)

#: A cached token is replaced this many seconds before its `exp`.
EXPIRY_MARGIN = 30.0

#: KBS rejections that a fresh attestation may cure (stale claims, expired
#: or unknown token). Others (missing resource, bad path) are final.
REFRESHABLE_ERRORS: tuple[type[TrusteeError], ...] = (TokenVerifierError, TokenNotFoundError, AttestationError, PolicyDenyError)


@dataclass(frozen=True)
class Credential:
    """A KBS attestation token and the TEE key pair bound into it."""

    token: str
    key_pair: TeeKeyPair
    expires_at: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at - EXPIRY_MARGIN


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (the KBS verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = loads_json(url_decode(parts[1], "token payload"), "token payload")
    except TrusteeError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def parse_token_reply(reply: bytes) -> Credential:
    """The AA's `GetToken("kbs")` reply: `{"token": "<JWT>", "tee_keypair": "<PEM>"}`."""
    try:
        body = loads_json(reply, "kbs token reply")
        token, pem = body["token"], body["tee_keypair"]
    except (TrusteeError, KeyError, TypeError):
        raise UpstreamError("attestation agent returned a malformed kbs token reply") from None
    if not isinstance(token, str) or not isinstance(pem, str):
        raise UpstreamError("attestation agent returned a malformed kbs token reply")
    try:
        key_pair = load_tee_key_pair(pem.encode(), os.environ)  # a software key, or a TPM-bound one (TSS2 PEM)
    except TrusteeError as exc:
        raise UpstreamError(f"attestation agent returned an unusable TEE key: {exc.detail}") from exc
    return Credential(token, key_pair, token_expiry(token))


class TokenSource(Protocol):
    async def fetch_credential(self) -> Credential:
        """A fresh token and key pair (one attestation)."""


class ResourceGetter(Protocol):
    async def get(self, kbs_path: str, credential: Credential) -> bytes:
        """GET `/kbs/v0/<kbs_path>` in passport mode and decrypt the reply."""


class ResourceHub:
    def __init__(self, tokens: TokenSource, kbs: ResourceGetter | None, clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self._kbs = kbs
        self._clock = clock
        self._cached: Credential | None = None
        self._lock = asyncio.Lock()

    async def get_resource(self, uri: str) -> bytes:
        path = ResourceUri.parse(uri).kbs_path()
        if self._kbs is None:
            raise ConfigError("no KBS configured: set [kbc] in the CDH config, or AA_KBC_PARAMS=cc_kbc::<url> without one")
        credential, fresh = await self._credential()
        try:
            return await self._kbs.get(path, credential)
        except REFRESHABLE_ERRORS as exc:
            if fresh:
                raise
            logger.info("KBS rejected the cached token (%s); attesting again", exc.variant)
        return await self._kbs.get(path, await self._replace(credential))

    async def _credential(self) -> tuple[Credential, bool]:
        """The cached credential, or a new one (then `fresh` is True)."""
        async with self._lock:
            cached = self._cached
            if cached is not None and not cached.expired(self._clock()):
                return cached, False
            self._cached = await self._tokens.fetch_credential()
            logger.info("obtained a new KBS token from the attestation agent")
            return self._cached, True

    async def _replace(self, stale: Credential) -> Credential:
        """A credential other than `stale`: another caller's refresh, or a new one."""
        async with self._lock:
            if self._cached is not None and self._cached is not stale:
                return self._cached
            self._cached = None
            self._cached = await self._tokens.fetch_credential()
            logger.info("obtained a new KBS token from the attestation agent")
            return self._cached
