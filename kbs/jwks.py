"""Fetching trusted JWK sets (files, `file://`, `https://`) into a `KeyRing`, with a bounded refresh.

Sources are `[attestation_token] trusted_jwk_sets` and Intel Trust
Authority's `certs_file`. Every source is read at start (a source that
cannot be read or yields no key stops the KBS with a `ConfigError`), and
again when a token names a `kid` no loaded set holds (a key rotation),
at most once per `min_refresh_seconds` (monotonic clock): a stream of
tokens with made-up `kid`s costs one fetch per interval, and concurrent
requests wait for the one fetch in progress. A failed refresh keeps the
keys already loaded and is logged.

An `https://` source is fetched directly; if that answer is not a JWK set
with keys, `<uri>/.well-known/openid-configuration` is read and its
`jwks_uri` fetched (as upstream does, so `certs_file =
"https://portal.trustauthority.intel.com"` works). HTTPS uses the system
trust store (`SSL_CERT_FILE` overrides it); answers are bounded in size and
time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from kbs.core.jwk_set import KeyId, KeyRing, TrustedJwk, parse_jwk_set
from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
DEFAULT_REFRESH_SECONDS = 60.0
OPENID_SUFFIX = ".well-known/openid-configuration"


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url, headers={"Accept": "application/json"}) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} from {url}")
        data = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
        return data


def _openid_url(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"


async def _fetch_https(uri: str, where: str) -> dict[KeyId, TrustedJwk]:
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        first_error = ""
        try:
            return parse_jwk_set(await _get(session, uri), where).keys
        except (ValueError, ConfigError) as exc:
            first_error = str(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ValueError(f"cannot fetch {uri}: {type(exc).__name__}: {exc}") from None
        try:
            config = json.loads(await _get(session, _openid_url(uri) + OPENID_SUFFIX))
            jwks_uri = config.get("jwks_uri") if isinstance(config, dict) else None
            if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
                raise ValueError("its OpenID configuration has no https jwks_uri")
            return parse_jwk_set(await _get(session, jwks_uri), where).keys
        except (ValueError, ConfigError, aiohttp.ClientError, TimeoutError) as exc:
            raise ValueError(f"{uri} is not a JWK set ({first_error}) and OpenID discovery failed ({exc})") from None


def _read_file(uri: str, where: str) -> dict[KeyId, TrustedJwk]:
    parts = urlsplit(uri)
    path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(uri)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
    return parse_jwk_set(data, where).keys


async def fetch_keys(uri: str, where: str) -> dict[KeyId, TrustedJwk]:
    """The keys of one source; `ValueError`/`ConfigError` with the reason."""
    if urlsplit(uri).scheme == "https":
        return await _fetch_https(uri, where)
    return _read_file(uri, where)


class JwkSetSource:
    """The sources of one configuration key, their keys in `ring`."""

    def __init__(self, uris: tuple[str, ...], where: str, *, min_refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.uris = uris
        self.where = where
        self.ring = KeyRing()
        self._min_refresh = min_refresh_seconds
        self._monotonic = monotonic
        self._last: float | None = None
        self._lock = asyncio.Lock()
        #: Fetches done (start included): what the bound limits.
        self.fetches = 0

    async def _fetch_all(self) -> dict[KeyId, TrustedJwk]:
        keys: dict[KeyId, TrustedJwk] = {}
        for uri in self.uris:
            keys.update(await fetch_keys(uri, f"{self.where} {uri}"))
        return keys

    async def load(self) -> None:
        """Read every source now; `ConfigError` if one cannot be read or holds no usable key."""
        self._last = self._monotonic()
        self.fetches += 1
        try:
            self.ring.keys = await self._fetch_all()
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{self.where}: {exc}") from None
        logger.info("%s: %d trusted key(s) loaded", self.where, len(self.ring.keys))

    def may_refresh(self) -> bool:
        return self._last is None or self._monotonic() - self._last >= self._min_refresh

    async def refresh(self) -> None:
        """Fetch again unless the last fetch is younger than the bound; keep the old keys on failure."""
        if not self.may_refresh():
            return
        async with self._lock:
            if not self.may_refresh():
                return  # another request refreshed while this one waited
            self._last = self._monotonic()
            self.fetches += 1
            try:
                keys = await self._fetch_all()
            except (ValueError, ConfigError) as exc:
                logger.warning("%s: refresh failed, keeping the %d key(s) loaded: %s", self.where, len(self.ring.keys), exc)
                return
            self.ring.keys = keys
            logger.info("%s: refreshed, %d trusted key(s)", self.where, len(keys))
