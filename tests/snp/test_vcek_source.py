"""VCEK sources of the AS: offline KDS-layout stores, a KDS fetcher against a loopback fake KDS, the store cache, config."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from attestation_service.config import AsConfig, SnpSettings
from attestation_service.core.verifiers.snp import VcekKey, parse_report
from attestation_service.snp_vcek import NAMESPACE, KdsVcekFetcher, OfflineVcekStore, VcekSource, build_snp_verifier, storage_key

from tests.snp.corpus import GENOA, MILAN, SNP, wire_json
from trustee_common.errors import ConfigError, UpstreamError
from trustee_common.storage.memory import MemoryStore

VCEK = (SNP / "virtee-milan" / "vcek.der").read_bytes()
GENOA_KEY = VcekKey.of(parse_report(GENOA.report))


def test_offline_store_exact_path_then_hwid_file(tmp_path: Path) -> None:
    key = VcekKey.of(parse_report(MILAN.report))
    store = OfflineVcekStore(tmp_path)
    assert store.lookup(key) is None
    chip = tmp_path / "vcek" / "v1" / "Milan" / key.hwid("Milan")
    chip.parent.mkdir(parents=True)
    chip.write_bytes(b"hwid file")
    assert store.lookup(key) == b"hwid file"
    (tmp_path / key.kds_path("Milan")).write_bytes(VCEK)
    assert store.lookup(key) == VCEK
    (tmp_path / "vcek" / "v1" / "Milan" / "crl").write_bytes(b"crl")
    assert store.crls() == [b"crl"]


def test_offline_store_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        OfflineVcekStore(tmp_path / "missing")


@pytest.fixture
async def fake_kds() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback stand-in for AMD KDS that serves the Genoa VCEK of the corpus."""
    from attestation_service.core.verifiers.snp import parse_evidence
    from cryptography.hazmat.primitives.serialization import Encoding

    der = parse_evidence(GENOA.wire_json).certificates[0].public_bytes(Encoding.DER)
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        if request.path_qs == "/" + GENOA_KEY.kds_path("Genoa"):
            return web.Response(body=der)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_kds_fetch_is_cached_in_the_store(fake_kds: tuple[str, list[str]]) -> None:
    url, seen = fake_kds
    store = MemoryStore()
    source = VcekSource([], KdsVcekFetcher(url, 5), store)
    await source.prepare(GENOA_KEY)
    assert source.lookup(GENOA_KEY) is not None
    assert await store.get(NAMESPACE, storage_key(GENOA_KEY, "Genoa")) == source.lookup(GENOA_KEY)
    again = VcekSource([], KdsVcekFetcher(url, 5), store)
    await again.prepare(GENOA_KEY)
    assert len(seen) == 1  # the second source found it in the store
    assert again.lookup(GENOA_KEY) == source.lookup(GENOA_KEY)


async def test_the_as_verifier_fetches_before_verifying(fake_kds: tuple[str, list[str]]) -> None:
    url, _ = fake_kds
    verifier = build_snp_verifier(SnpSettings(kds_url=url, kds_timeout=5, verification_time=GENOA.now), MemoryStore())
    evidence = wire_json(GENOA.report)
    await verifier.prepare(evidence)
    [(claims, _)] = verifier.evaluate(evidence, None, None, GENOA.now)
    assert claims["product"] == "Genoa"


async def test_kds_errors_are_upstream_errors(fake_kds: tuple[str, list[str]]) -> None:
    url, _ = fake_kds
    other = VcekKey("Milan", bytes(64), 1, 0, 1, 1)
    with pytest.raises(UpstreamError, match="answered 404"):
        await VcekSource([], KdsVcekFetcher(url, 5)).prepare(other)
    with pytest.raises(UpstreamError, match="failed"):
        await VcekSource([], KdsVcekFetcher("http://127.0.0.1:9", 1)).prepare(other)


async def test_no_fetch_for_v2_reports_or_offline_hits(tmp_path: Path) -> None:
    class Refuse(KdsVcekFetcher):
        async def fetch(self, key: VcekKey, product: str) -> bytes:
            raise AssertionError("must not fetch")

    milan = VcekKey.of(parse_report(MILAN.report))
    await VcekSource([], Refuse("http://unused")).prepare(milan)  # v2: product unknown
    (tmp_path / GENOA_KEY.kds_path("Genoa")).parent.mkdir(parents=True)
    (tmp_path / GENOA_KEY.kds_path("Genoa")).write_bytes(b"x")
    await VcekSource([OfflineVcekStore(tmp_path)], Refuse("http://unused")).prepare(GENOA_KEY)


def _config(tmp_path: Path, body: str) -> AsConfig:
    path = tmp_path / "as.toml"
    path.write_text('[storage_backend]\nstorage_type = "Memory"\n' + body)
    return AsConfig.load(path)


def test_config_table(tmp_path: Path) -> None:
    config = _config(tmp_path, (
        "[verifier_config.snp_verifier]\n"
        'vcek_sources = [{ type = "OfflineStore", path = "kds" }, { type = "KDS", base_url = "https://kds.example", timeout = 3 }]\n'
        'verification_time = "2025-01-01T00:00:00Z"\n'
    ))
    assert config.snp is not None
    assert config.snp.offline_stores == (tmp_path / "kds",)
    assert (config.snp.kds_url, config.snp.kds_timeout) == ("https://kds.example", 3)
    assert config.snp.verification_time is not None and config.snp.verification_time.year == 2025
    assert _config(tmp_path, "").snp is None


def test_upstream_defaults(tmp_path: Path) -> None:
    # upstream's shapes: an OfflineStore without path is its default folder; a table without vcek_sources is [KDS]
    config = _config(tmp_path, '[verifier_config.snp_verifier]\nvcek_sources = [{ type = "OfflineStore" }]\n')
    assert config.snp is not None
    assert config.snp.offline_stores == (Path("/opt/confidential-containers/attestation-service/kds-store"),)
    config = _config(tmp_path, "[verifier_config.snp_verifier]\n")
    assert config.snp is not None and config.snp.kds_url == "https://kdsintf.amd.com"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('vcek_sources = [{ type = "Nope" }]', "is not one of OfflineStore, KDS"),
        ('vcek_sources = [{ type = "KDS", base_url = "ftp://x" }]', "http"),
        ('vcek_sources = [{ type = "KDS" }, { type = "KDS" }]', "only one KDS"),
        ('vcek_sources = [{ type = "KDS", extra = 1 }]', "unknown key"),
        ("unknown = 1", "unknown key"),
        ('verification_time = "yesterday"', "RFC 3339"),
    ],
)
def test_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, "[verifier_config.snp_verifier]\n" + body + "\n")


def test_store_copy_helper(tmp_path: Path) -> None:
    # the layout documented for operators: `cp vcek.der "<store>/vcek/v1/Milan/<hwid>?blSPL=...`
    key = VcekKey.of(parse_report(MILAN.report))
    target = tmp_path / key.kds_path("Milan")
    target.parent.mkdir(parents=True)
    shutil.copy(SNP / "virtee-milan" / "vcek.der", target)
    assert "?" in target.name and OfflineVcekStore(tmp_path).lookup(key) == VCEK
