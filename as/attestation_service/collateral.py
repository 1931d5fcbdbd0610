"""DCAP collateral for the `tdx` verifier: offline bundles and an optional PCS/PCCS fetcher (adapters).

Offline: `load_collateral(path)` reads one `QuoteCollateralV3` JSON file or
every `*.json` file of a directory (suggested name `<fmspc>-<ca>.json`, e.g.
`b0c06f000000-platform.json`) and indexes each bundle by the FMSPC of its TCB
Info and the CA type of its PCK CRL issuer, so file names are not trusted.

Online (optional): `PcsCollateralFetcher` asks an Intel PCS or a PCCS
(`collateral_service`, v4 API; like upstream, only its scheme, host and port
are used, so `https://api.trustedservices.intel.com/sgx/certification/v4/`
works) for the PCK CRL, TCB Info and TD_QE identity (`update=early|standard`,
from `tcb_update_type`) and the Intel root CRL, with a timeout, and caches the bundle in the
KeyValueStore namespace `intel-dcap-collateral` (key `<fmspc>-<ca>`) until
its earliest `nextUpdate`. `CollateralSource.prepare` runs it before the
pure verifier; offline bundles always win.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
from cryptography import x509

from attestation_service.config import DcapSettings
from attestation_service.core.verifiers.tdx.collateral import TdxCollateral
from attestation_service.core.verifiers.tdx.quote import parse_quote
from attestation_service.core.verifiers.tdx.tcb import parse_qe_identity, parse_tcb_info
from attestation_service.core.verifiers.tdx.verifier import TdxVerifier, collateral_key, parse_evidence
from attestation_service.fetching import FetchingVerifier
from trustee_common.bounded import loads_json
from trustee_common.errors import ConfigError, TrusteeError, UpstreamError
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

NAMESPACE = "intel-dcap-collateral"
ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
DEFAULT_TIMEOUT_S = 10
MAX_RESPONSE_BYTES = 1024 * 1024

Key = tuple[str, str]


def load_collateral(path: Path) -> dict[Key, TdxCollateral]:
    """Bundles from a file or a directory of `*.json` files, by (FMSPC hex, CA type)."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"collateral {path}: no such file or directory")
    found: dict[Key, TdxCollateral] = {}
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(document, dict) and "collaterals" in document:
                raise ConfigError("an Intel PCS Client Tool file (upstream's file:// collateral_service format) is not read here: "
                                  "give QuoteCollateralV3 JSON bundles")
            bundle = TdxCollateral.from_json(document)
            key = bundle.key()
        except (OSError, ValueError, TrusteeError) as exc:
            detail = exc.detail if isinstance(exc, TrusteeError) else str(exc)
            raise ConfigError(f"collateral file {file}: {detail}") from None
        if key in found:
            raise ConfigError(f"collateral file {file}: a second bundle for FMSPC {key[0]} ({key[1]} CA)")
        found[key] = bundle
        logger.info("DCAP collateral for FMSPC %s (%s CA) from %s", key[0].upper(), key[1], file)
    return found


def _chain_header(response: aiohttp.ClientResponse, *names: str) -> bytes:
    for name in names:
        value = response.headers.get(name)
        if value:
            return unquote(value).encode()
    raise UpstreamError(f"collateral service: response for {response.url} lacks the {names[0]} header")


def _raw_member(body: str, member: str) -> tuple[str, str]:
    """The exact text of `member`'s object in a PCS body (the signed bytes) and the hex signature."""
    parsed = loads_json(body, "collateral service body", error=UpstreamError)
    start = body.find(f'"{member}"')
    if start < 0 or not isinstance(parsed, dict) or not isinstance(parsed.get("signature"), str):
        raise UpstreamError(f"collateral service: body has no {member} / signature")
    start = body.index(":", start) + 1
    while body[start].isspace():
        start += 1
    _, end = json.JSONDecoder().raw_decode(body, start)
    return body[start:end], str(parsed["signature"])


class PcsCollateralFetcher:
    """Intel PCS v4 / PCCS client with a timeout; the bundle is verified later by the pure core."""

    def __init__(
        self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, root_crl_url: str = ROOT_CA_CRL_URL, tcb_update_type: str = "early"
    ) -> None:
        parts = urlsplit(base_url)
        self._base = f"{parts.scheme}://{parts.netloc}"  # endpoints are built from the host, as upstream does
        self._update = tcb_update_type
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._root_crl_url = root_crl_url

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[bytes, aiohttp.ClientResponse]:
        try:
            async with session.get(url) as response:
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if response.status != 200:
                    raise UpstreamError(f"collateral service: GET {url} answered {response.status}")
                if len(body) > MAX_RESPONSE_BYTES:
                    raise UpstreamError(f"collateral service: GET {url} answered more than {MAX_RESPONSE_BYTES} bytes")
                return body, response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"collateral service: GET {url} failed: {str(exc) or type(exc).__name__}") from None

    async def fetch(self, fmspc: str, ca: str) -> TdxCollateral:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            crl, crl_response = await self._get(session, f"{self._base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der")
            tcb, tcb_response = await self._get(session, f"{self._base}/tdx/certification/v4/tcb?fmspc={fmspc}&update={self._update}")
            qe, qe_response = await self._get(session, f"{self._base}/tdx/certification/v4/qe/identity?update={self._update}")
            root_crl, _ = await self._get(session, self._root_crl_url)
        tcb_raw, tcb_sig = _raw_member(tcb.decode(), "tcbInfo")
        qe_raw, qe_sig = _raw_member(qe.decode(), "enclaveIdentity")
        try:
            return TdxCollateral(
                pck_crl_issuer_chain=_chain_header(crl_response, "SGX-PCK-CRL-Issuer-Chain"),
                root_ca_crl=root_crl,
                pck_crl=crl,
                tcb_info_issuer_chain=_chain_header(tcb_response, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"),
                tcb_info=tcb_raw.encode(),
                tcb_info_signature=bytes.fromhex(tcb_sig),
                qe_identity_issuer_chain=_chain_header(qe_response, "SGX-Enclave-Identity-Issuer-Chain"),
                qe_identity=qe_raw.encode(),
                qe_identity_signature=bytes.fromhex(qe_sig),
            )
        except ValueError:
            raise UpstreamError("collateral service: a signature is not hex") from None


def next_update(bundle: TdxCollateral) -> datetime.datetime:
    """The earliest `nextUpdate` of the TCB Info, QE identity and both CRLs (the cache lifetime)."""
    times = [parse_tcb_info(bundle.tcb_info).next_update, parse_qe_identity(bundle.qe_identity).next_update]
    for der in (bundle.root_ca_crl, bundle.pck_crl):
        try:
            crl_next = x509.load_der_x509_crl(der).next_update_utc
        except ValueError:
            raise UpstreamError("collateral service: a CRL is not DER") from None
        if crl_next is not None:
            times.append(crl_next)
    return min(times)


class CollateralSource:
    """The `CollateralLookup` of the AS: offline bundles, then bundles fetched by `prepare` (cached in the store)."""

    def __init__(
        self,
        offline: dict[Key, TdxCollateral],
        fetcher: PcsCollateralFetcher | None = None,
        store: KeyValueStore | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._offline = offline
        self._fetcher = fetcher
        self._store = store
        self._clock = clock
        self._fetched: dict[Key, TdxCollateral] = {}

    def lookup(self, fmspc: str, ca: str) -> TdxCollateral | None:
        key = (fmspc.lower(), ca)
        return self._offline.get(key) or self._fetched.get(key)

    async def prepare(self, fmspc: str, ca: str) -> None:
        key = (fmspc.lower(), ca)
        if key in self._offline or self._fetcher is None:
            return
        now = self._clock()
        current = self._fetched.get(key)
        if current is not None and next_update(current) > now:
            return
        storage_key = f"{key[0]}-{key[1]}"
        if self._store is not None:
            cached = await self._store.get(NAMESPACE, storage_key)
            if cached is not None:
                bundle = TdxCollateral.from_json(json.loads(cached))
                if next_update(bundle) > now:
                    self._fetched[key] = bundle
                    return
        bundle = await self._fetcher.fetch(*key)
        self._fetched[key] = bundle
        if self._store is not None:
            expires = next_update(bundle).timestamp()
            await self._store.put(NAMESPACE, storage_key, json.dumps(bundle.to_json()).encode(), expires_at=expires)
        logger.info("fetched DCAP collateral for FMSPC %s (%s CA)", key[0].upper(), key[1])


def build_tdx_verifier(settings: DcapSettings | None, store: KeyValueStore | None) -> FetchingVerifier:
    """The `tdx` verifier from `[verifier_config.dcap_verifier]` (no table: refuses every quote, no collateral)."""
    settings = settings if settings is not None else DcapSettings()
    offline = {} if settings.collateral_dir is None else load_collateral(settings.collateral_dir)
    fetcher = None
    if settings.collateral_service is not None:
        fetcher = PcsCollateralFetcher(settings.collateral_service, settings.timeout, tcb_update_type=settings.tcb_update_type)
    if settings.verification_time is not None:
        logger.warning("DCAP verification time pinned to %s (test-only setting)", settings.verification_time.isoformat())
    source = CollateralSource(offline, fetcher, store)
    verifier = TdxVerifier(
        source.lookup, accept_expired_collateral=settings.accept_expired_collateral, verification_time=settings.verification_time
    )
    return fetching_tdx_verifier(verifier, source)


def fetching_tdx_verifier(verifier: TdxVerifier, source: CollateralSource) -> FetchingVerifier:
    """`verifier` behind a hook that fetches the quote's collateral into `source` first."""

    async def prepare(evidence: object) -> None:
        try:
            quote, _ = parse_evidence(evidence)
            fmspc, ca = collateral_key(parse_quote(quote))
        except TrusteeError:
            return  # the verifier reports it with the step that failed
        await source.prepare(fmspc, ca)

    return FetchingVerifier("tdx", verifier, prepare)
