"""OCI distribution API v2 client (pull only): manifests, blobs, token and basic auth.

`RegistryClient` talks to one repository of one registry for one pull:

- `fetch_manifest` GETs `/v2/<name>/manifests/<tag|digest>` accepting OCI
  manifests and indexes and Docker schema 2 manifests and manifest lists; an
  index is resolved to the entry of the configured platform, fetched by
  digest. Every manifest is bounded in size, and one fetched by digest must
  hash to that digest (a tag's manifest must match `Docker-Content-Digest`
  when the registry sends it).
- `fetch_blob` streams `/v2/<name>/blobs/<digest>` to a file, following
  redirects itself (at most 5; `Authorization` is sent to the registry's own
  origin only; no HTTPS → HTTP downgrade), and checks size and sha256
  against the descriptor before the file is used.
- Auth: a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
  makes the client fetch a token from the realm (with basic credentials when
  configured) and retry once; the token is then sent with every later request
  of the same client. A `Basic` challenge is answered with the credentials.
  A second 401 is final.

HTTPS always, trusting the system roots plus `extra_root_certificates`;
plain HTTP only when the registry rules mark the registry insecure. Errors:
unreachable or failing registry → UpstreamError naming the host; missing
repository, tag or blob → ImageNotFoundError; digest or size mismatch →
ImageIntegrityError; oversized or unsupported documents → UnsafeImageError.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from guest.image.config import Credentials, ImageConfig, Platform, proxy_for
from guest.image.reference import ImageReference
from trustee_common.errors import (
    ConfigError,
    ImageIntegrityError,
    ImageNotFoundError,
    UnsafeImageError,
    UpstreamError,
    clip_repr,
)

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
ACCEPT = ", ".join((MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST))
MAX_REDIRECTS = 5
#: Error bodies and token answers are read up to this many bytes.
MAX_SMALL_BODY = 64 * 1024
MAX_INDEX_ENTRIES = 1024
CHUNK = 256 * 1024
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Descriptor:
    """The fields of an OCI descriptor that a pull relies on (`raw` keeps all of them, annotations included)."""

    media_type: str
    digest: str
    size: int
    raw: dict[str, Any]


@dataclass(frozen=True)
class FetchedManifest:
    """An image manifest: its digest (of the platform manifest, not of an index), type, and document."""

    digest: str
    media_type: str
    document: dict[str, Any]


def parse_descriptor(value: object, what: str) -> Descriptor:
    """A descriptor with a sha256 digest and a non-negative integer size, or UnsafeImageError."""
    if not isinstance(value, dict):
        raise UnsafeImageError(f"{what}: descriptor is not an object")
    media_type, digest, size = value.get("mediaType", ""), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or len(media_type) > 255:
        raise UnsafeImageError(f"{what}: mediaType is not a short string")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UnsafeImageError(f"{what}: digest {clip_repr(digest)} is not sha256:<64 lower-case hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsafeImageError(f"{what}: size is not a non-negative integer")
    return Descriptor(media_type, digest, size, value)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`WWW-Authenticate` → (lower-case scheme, parameters). Only the first challenge is read."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest) and len(params) < 16:
        match = _CHALLENGE_PARAM.match(rest, position)
        if match is None:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
    return scheme.lower(), params


def choose_platform(index: dict[str, Any], platform: Platform) -> Descriptor:
    """The index entry for `platform`: same os and architecture; the same variant preferred, then none."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) > MAX_INDEX_ENTRIES:
        raise UnsafeImageError(f"image index: 'manifests' must be a list of at most {MAX_INDEX_ENTRIES} entries")
    candidates: list[tuple[int, Descriptor]] = []
    for number, entry in enumerate(entries):
        descriptor = parse_descriptor(entry, f"image index entry {number}")
        wanted = descriptor.raw.get("platform")
        if not isinstance(wanted, dict):
            continue
        if wanted.get("os") != platform.os or wanted.get("architecture") != platform.architecture:
            continue
        variant = wanted.get("variant")
        rank = 0 if variant == platform.variant else 1 if variant is None or platform.variant is None else 2
        if rank < 2:
            candidates.append((rank, descriptor))
    if not candidates:
        raise ImageNotFoundError(f"the image index has no manifest for platform {platform}")
    return min(candidates, key=lambda item: item[0])[1]


def ssl_context(extra_root_certificates: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for pem in extra_root_certificates:
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError("image.extra_root_certificates: an entry is not a PEM certificate") from exc
    return context


def open_session(config: ImageConfig) -> aiohttp.ClientSession:
    """A session for one pull: TLS with the configured roots, connect and read timeouts, no total limit."""
    timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout, sock_read=config.read_timeout)
    connector = aiohttp.TCPConnector(ssl=ssl_context(config.extra_root_certificates), limit=16)
    return aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False, auto_decompress=False)


class RegistryClient:
    """Pull-side API for one repository (see the module docstring)."""

    def __init__(self, session: aiohttp.ClientSession, reference: ImageReference, config: ImageConfig, *,
                 insecure: bool = False) -> None:
        self._session = session
        self._ref = reference
        self._config = config
        self._insecure = insecure
        self._host = reference.api_host
        self._base = URL(f"{'http' if insecure else 'https'}://{self._host}")
        self._credentials: Credentials | None = config.credentials_for(reference.registry)
        self._authorization: str | None = None

    async def fetch_manifest(self) -> FetchedManifest:
        """The image manifest for the configured platform (through an index when the reference names one)."""
        pinned = self._ref.digest
        media_type, body, digest = await self._manifest(self._ref.reference, pinned)
        if media_type in INDEX_TYPES:
            entry = choose_platform(_json(body, "image index"), self._config.platform)
            if entry.media_type and entry.media_type not in MANIFEST_TYPES:
                raise UnsafeImageError(f"image index entry for {self._config.platform} has media type "
                                       f"{clip_repr(entry.media_type)}, not an image manifest")
            media_type, body, digest = await self._manifest(entry.digest, entry.digest)
            if len(body) != entry.size:
                raise ImageIntegrityError(f"manifest {entry.digest} is {len(body)} bytes, its index entry says {entry.size}")
        if media_type not in MANIFEST_TYPES:
            raise UnsafeImageError(f"image {self._ref}: media type {clip_repr(media_type)} is not a supported manifest")
        return FetchedManifest(digest, media_type, _json(body, "image manifest"))

    async def fetch_config(self, descriptor: Descriptor) -> bytes:
        """The config blob, bounded by `max_config_bytes` and checked against its descriptor."""
        if descriptor.size > self._config.max_config_bytes:
            raise UnsafeImageError(f"image config is {descriptor.size} bytes, over the {self._config.max_config_bytes} limit")
        async with self._open(f"blobs/{descriptor.digest}", None) as response:
            self._check_status(response, f"config blob {descriptor.digest}")
            body = await self._read_bounded(response, descriptor.size, "image config")
        _verify(body, descriptor.digest, descriptor.size, "image config")
        return body

    async def fetch_blob(self, descriptor: Descriptor, dest: Path) -> None:
        """Stream a blob into the new file `dest`; ImageIntegrityError if its size or digest is not the descriptor's."""
        hasher = hashlib.sha256()
        received = 0
        async with self._open(f"blobs/{descriptor.digest}", None) as response:
            self._check_status(response, f"blob {descriptor.digest}")
            with open(dest, "xb") as out:  # noqa: ASYNC230 - short local writes between network reads
                try:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        received += len(chunk)
                        if received > descriptor.size:
                            raise ImageIntegrityError(f"blob {descriptor.digest} is larger than its descriptor's "
                                                      f"{descriptor.size} bytes")
                        hasher.update(chunk)
                        out.write(chunk)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise self._unreachable(exc) from exc
        if received != descriptor.size or "sha256:" + hasher.hexdigest() != descriptor.digest:
            raise ImageIntegrityError(f"blob {descriptor.digest} does not match its descriptor "
                                      f"({received} bytes received, {descriptor.size} expected, or another digest)")

    # --- manifests ---------------------------------------------------------

    async def _manifest(self, reference: str, pinned: str | None) -> tuple[str, bytes, str]:
        async with self._open(f"manifests/{reference}", ACCEPT) as response:
            self._check_status(response, f"manifest {reference}")
            body = await self._read_bounded(response, self._config.max_manifest_bytes, "manifest")
            header_digest = response.headers.get("Docker-Content-Digest")
            content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if pinned is not None and digest != pinned:
            raise ImageIntegrityError(f"manifest fetched by digest {pinned} hashes to {digest}")
        if pinned is None and header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise ImageIntegrityError(f"manifest of {self._ref} hashes to {digest}, the registry says {header_digest}")
        document = _json(body, "manifest")
        media_type = document.get("mediaType") or content_type
        if not media_type:
            media_type = MEDIA_OCI_INDEX if "manifests" in document else MEDIA_OCI_MANIFEST
        return str(media_type), body, digest

    # --- HTTP with auth and redirects --------------------------------------

    @asynccontextmanager
    async def _open(self, path: str, accept: str | None) -> AsyncIterator[aiohttp.ClientResponse]:
        url = URL(f"{self._base}/v2/{self._ref.repository}/{path}")
        response = await self._send(url, accept)
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if not await self._authenticate(challenge):
                raise UpstreamError(f"registry {self._host} requires authentication for {self._ref.repository} "
                                    "and no usable credentials are configured")
            response = await self._send(url, accept)
            if response.status == 401:
                response.release()
                raise UpstreamError(f"registry {self._host} refused the credentials for {self._ref.repository} "
                                    "(HTTP 401 after authenticating)")
        try:
            yield response
        finally:
            response.release()

    async def _send(self, url: URL, accept: str | None) -> aiohttp.ClientResponse:
        origin = self._base.origin()
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept": accept} if accept else {}
            if self._authorization and url.origin() == origin:
                headers["Authorization"] = self._authorization
            try:
                response = await self._session.get(url, headers=headers, allow_redirects=False,
                                                   proxy=proxy_for(self._config, url.scheme, url.host or ""))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._unreachable(exc) from exc
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location", "")
            response.release()
            url = url.join(URL(location))
            if url.scheme != "https" and not (self._insecure and url.scheme == "http"):
                raise UpstreamError(f"registry {self._host} redirected a download to {url.scheme}:, which is refused")
        raise UpstreamError(f"registry {self._host}: more than {MAX_REDIRECTS} redirects")

    async def _authenticate(self, header: str) -> bool:
        scheme, params = parse_challenge(header)
        if scheme == "basic" and self._credentials is not None:
            self._authorization = "Basic " + _basic(self._credentials)
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        self._authorization = "Bearer " + await self._token(params)
        return True

    async def _token(self, params: dict[str, str]) -> str:
        realm = URL(params["realm"])
        if realm.scheme not in ("https", "http") or (realm.scheme == "http" and not self._insecure):
            raise UpstreamError(f"registry {self._host}: token realm {clip_repr(params['realm'])} is not an HTTPS URL")
        query: dict[str, str] = {key: params[key] for key in ("service", "scope") if key in params}
        query.setdefault("scope", f"repository:{self._ref.repository}:pull")
        headers = {"Authorization": "Basic " + _basic(self._credentials)} if self._credentials else {}
        try:
            async with self._session.get(realm.update_query(query), headers=headers, allow_redirects=False,
                                         proxy=proxy_for(self._config, realm.scheme, realm.host or "")) as response:
                if response.status != 200:
                    raise UpstreamError(f"token service {realm.host} of registry {self._host} answered HTTP {response.status}")
                body = await self._read_bounded(response, MAX_SMALL_BODY, "token answer")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"token service {realm.host} of registry {self._host} is unreachable: "
                                f"{type(exc).__name__}") from exc
        answer = _json(body, "token answer")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token or len(token) > MAX_SMALL_BODY:
            raise UpstreamError(f"token service {realm.host} of registry {self._host} sent no token")
        return token

    # --- answers ------------------------------------------------------------

    def _check_status(self, response: aiohttp.ClientResponse, what: str) -> None:
        if response.status == 200:
            return
        if response.status == 404:
            raise ImageNotFoundError(f"image {self._ref}: {what} not found in registry {self._host}")
        if response.status == 403:
            raise UpstreamError(f"registry {self._host} denied access to {what} of {self._ref.repository} (HTTP 403)")
        raise UpstreamError(f"registry {self._host} answered HTTP {response.status} for {what} of {self._ref.repository}")

    async def _read_bounded(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        if response.content_length is not None and response.content_length > limit:
            raise UnsafeImageError(f"{what} from {self._host} is {response.content_length} bytes, over the {limit} limit")
        body = bytearray()
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > limit:
                    raise UnsafeImageError(f"{what} from {self._host} is over the {limit} byte limit")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._unreachable(exc) from exc
        return bytes(body)

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        reason = str(exc) if isinstance(exc, OSError | aiohttp.ClientConnectionError) and str(exc) else type(exc).__name__
        return UpstreamError(f"registry {self._host} is unreachable: {clip_repr(reason)}")


def _basic(credentials: Credentials | None) -> str:
    assert credentials is not None
    return base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeImageError(f"{what} is not valid JSON") from exc
    if not isinstance(document, dict):
        raise UnsafeImageError(f"{what} is not a JSON object")
    return document


def _verify(body: bytes, digest: str, size: int, what: str) -> None:
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if len(body) != size or actual != digest:
        raise ImageIntegrityError(f"{what} does not match its descriptor (digest {actual}, expected {digest})")
