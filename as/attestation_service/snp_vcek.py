"""VCEKs for the `snp` verifier: offline KDS-layout stores and an optional AMD KDS fetcher (adapters).

Offline store (`type = "OfflineStore"`), laid out like AMD KDS URLs
(evidence.md 3.3) below its `path`:

```
vcek/v1/<Milan|Genoa|Turin>/<hwid>?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115[&fmcSPL=..]   one VCEK (DER or PEM)
vcek/v1/<product>/<hwid>                a chip's VCEK when only one TCB is kept (step 6 still checks its SPLs)
vcek/v1/<product>/crl, vlek/v1/<product>/crl   optional ARK-signed CRLs, applied to every report
```

`hwid` is lower-case hex of chip_id (its first 8 bytes on Turin). A file is
only a candidate: the pure verifier checks its chain, SPLs and hwID.

KDS (`type = "KDS"`): `VcekSource.prepare` fetches a missing VCEK from
`<base_url>/vcek/v1/...` with a timeout before the pure verifier runs and
keeps it in the store namespace `amd-kds-vcek` (key
`<product>-<hwid>-<bl>-<tee>-<snp>-<ucode>[-<fmc>]`) until the certificate
expires. Offline stores win; tests never reach the network.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp

from attestation_service.config import SnpSettings
from attestation_service.core.verifiers.snp import SnpVerifier, VcekKey, load_certificate, parse_evidence, parse_report
from attestation_service.core.verifiers.snp.certs import PRODUCTS
from attestation_service.core.verifiers.snp.verifier import needs_vcek
from attestation_service.fetching import FetchingVerifier
from trustee_common.errors import ConfigError, TrusteeError, UpstreamError
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

NAMESPACE = "amd-kds-vcek"
DEFAULT_TIMEOUT_S = 10
MAX_RESPONSE_BYTES = 64 * 1024


class OfflineVcekStore:
    """A directory laid out like AMD KDS (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise ConfigError(f"SNP offline VCEK store {path}: no such directory")
        self.path = path

    def lookup(self, key: VcekKey) -> bytes | None:
        for product in key.products():
            for relative in (key.kds_path(product), f"vcek/v1/{product}/{key.hwid(product)}"):
                candidate = self.path / relative
                if candidate.is_file():
                    logger.debug("VCEK for %s from %s", relative, self.path)
                    return candidate.read_bytes()
        return None

    def crls(self) -> list[bytes]:
        return [
            file.read_bytes()
            for kind in ("vcek", "vlek")
            for product in PRODUCTS
            if (file := self.path / kind / "v1" / product / "crl").is_file()
        ]


def storage_key(key: VcekKey, product: str) -> str:
    parts = [product, key.hwid(product), key.bootloader, key.tee, key.snp, key.microcode]
    if product == "Turin" and key.fmc is not None:
        parts.append(key.fmc)
    return "-".join(str(p) for p in parts)


class KdsVcekFetcher:
    """AMD KDS client (`GET <base>/vcek/v1/<product>/<hwid>?...` -> DER) with a timeout."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch(self, key: VcekKey, product: str) -> bytes:
        url = f"{self._base}/{key.kds_path(product)}"
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session, session.get(url) as response:
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if response.status != 200:
                    raise UpstreamError(f"AMD KDS: GET {url} answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"AMD KDS: GET {url} failed: {str(exc) or type(exc).__name__}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise UpstreamError(f"AMD KDS: GET {url} answered more than {MAX_RESPONSE_BYTES} bytes")
        return body


class VcekSource:
    """The `VcekLookup` of the AS: offline stores, then VCEKs fetched by `prepare` (cached in the store)."""

    def __init__(
        self,
        offline: list[OfflineVcekStore],
        fetcher: KdsVcekFetcher | None = None,
        store: KeyValueStore | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._offline = offline
        self._fetcher = fetcher
        self._store = store
        self._clock = clock
        self._fetched: dict[str, bytes] = {}

    def crls(self) -> tuple[bytes, ...]:
        return tuple(crl for store in self._offline for crl in store.crls())

    def lookup(self, key: VcekKey) -> bytes | None:
        for store in self._offline:
            found = store.lookup(key)
            if found is not None:
                return found
        for product in key.products():
            fetched = self._fetched.get(storage_key(key, product))
            if fetched is not None:
                return fetched
        return None

    async def prepare(self, key: VcekKey) -> None:
        if self._fetcher is None or key.product is None or self.lookup(key) is not None:
            return  # a v2 report has no CPUID: the product (hence the KDS URL) is unknown
        name = storage_key(key, key.product)
        if self._store is not None:
            cached = await self._store.get(NAMESPACE, name)
            if cached is not None:
                self._fetched[name] = cached
                return
        der = await self._fetcher.fetch(key, key.product)
        try:
            expires = load_certificate(der, "VCEK from AMD KDS").not_valid_after_utc
        except TrusteeError:
            raise UpstreamError(f"AMD KDS: the answer for {key.kds_path(key.product)} is not a certificate") from None
        self._fetched[name] = der
        if self._store is not None:
            await self._store.put(NAMESPACE, name, der, expires_at=expires.timestamp())
        logger.info("fetched the VCEK %s from AMD KDS", name)


def build_snp_verifier(settings: SnpSettings | None, store: KeyValueStore | None) -> FetchingVerifier:
    """The `snp` verifier from `[verifier_config.snp_verifier]` (no table: VCEKs/VLEKs from the evidence only)."""
    settings = settings if settings is not None else SnpSettings()
    offline = [OfflineVcekStore(path) for path in settings.offline_stores]
    fetcher = None if settings.kds_url is None else KdsVcekFetcher(settings.kds_url, settings.kds_timeout)
    if settings.verification_time is not None:
        logger.warning("SNP verification time pinned to %s (test-only setting)", settings.verification_time.isoformat())
    source = VcekSource(offline, fetcher, store)
    verifier = SnpVerifier(source.lookup, crls=source.crls(), verification_time=settings.verification_time)
    return fetching_snp_verifier(verifier, source)


def fetching_snp_verifier(verifier: SnpVerifier, source: VcekSource) -> FetchingVerifier:
    """`verifier` behind a hook that fetches the report's VCEK into `source` first."""

    async def prepare(evidence: object) -> None:
        try:
            parsed = parse_evidence(evidence)
            report = parse_report(parsed.report)
        except TrusteeError:
            return  # the verifier reports it with the step that failed
        if needs_vcek(parsed, report):
            await source.prepare(VcekKey.of(report))

    return FetchingVerifier("snp", verifier, prepare)
