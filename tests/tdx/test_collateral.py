"""Offline collateral loading, the AS config keys, and the PCS/PCCS fetcher against a local stand-in server."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote as urlquote

import pytest
from aiohttp import web
from attestation_service.collateral import (
    NAMESPACE,
    CollateralSource,
    PcsCollateralFetcher,
    fetching_tdx_verifier,
    load_collateral,
)
from attestation_service.config import AsConfig

from tests.tdx.corpus import V4, V5, at
from trustee_common.errors import ConfigError, UpstreamError
from trustee_common.storage.memory import MemoryStore


def test_load_directory_indexes_by_content(tmp_path: Path) -> None:
    for index, case in enumerate((V4, V5)):
        assert case.collateral_path is not None
        shutil.copy(case.collateral_path, tmp_path / f"bundle{index}.json")
    found = load_collateral(tmp_path)
    assert set(found) == {("b0c06f000000", "platform"), ("90c06f000000", "platform")}


def test_load_single_file() -> None:
    assert V4.collateral_path is not None
    assert set(load_collateral(V4.collateral_path)) == {("b0c06f000000", "platform")}


def test_bad_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"tcb_info": 1}')
    with pytest.raises(ConfigError, match=r"bad.json: collateral.pck_crl_issuer_chain: missing"):
        load_collateral(tmp_path)
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_collateral(tmp_path / "absent")


def test_duplicate_bundles_are_refused(tmp_path: Path) -> None:
    assert V4.collateral_path is not None
    shutil.copy(V4.collateral_path, tmp_path / "a.json")
    shutil.copy(V4.collateral_path, tmp_path / "b.json")
    with pytest.raises(ConfigError, match="a second bundle for FMSPC b0c06f000000"):
        load_collateral(tmp_path)


def test_config_keys(tmp_path: Path) -> None:
    config = tmp_path / "as.toml"
    config.write_text(
        '[verifier_config.dcap_verifier]\ncollateral_dir = "col"\ncollateral_service = "https://pccs.example"\n'
        'timeout = 3\nverification_time = "2025-07-01T00:00:00Z"\n'
    )
    dcap = AsConfig.load(config).dcap
    assert dcap is not None
    assert (dcap.collateral_dir, dcap.collateral_service, dcap.timeout) == (tmp_path / "col", "https://pccs.example", 3)
    assert dcap.verification_time == at("2025-07-01T00:00:00Z")
    assert not dcap.accept_expired_collateral


@pytest.mark.parametrize(
    ("body", "message"),
    [('verification_time = "soon"', "not an RFC 3339"), ('collateral_service = "ftp://x"', "http"), ("nope = 1", "unknown key")],
)
def test_bad_config_keys(tmp_path: Path, body: str, message: str) -> None:
    config = tmp_path / "as.toml"
    config.write_text(f"[verifier_config.dcap_verifier]\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        AsConfig.load(config)


# --- PCS / PCCS stand-in -------------------------------------------------------------------------


def pcs_app(calls: list[str]) -> web.Application:
    data = json.loads((V4.folder / "collateral.json").read_text())

    async def pckcrl(request: web.Request) -> web.Response:
        calls.append("pckcrl")
        headers = {"SGX-PCK-CRL-Issuer-Chain": urlquote(data["pck_crl_issuer_chain"])}
        return web.Response(body=bytes.fromhex(data["pck_crl"]), headers=headers)

    async def tcb(request: web.Request) -> web.Response:
        calls.append(f"tcb {request.query['fmspc']}")
        calls.append(f"update={request.query.get('update')}")
        body = '{"tcbInfo":' + data["tcb_info"] + ',"signature":"' + data["tcb_info_signature"] + '"}'
        return web.Response(text=body, headers={"TCB-Info-Issuer-Chain": urlquote(data["tcb_info_issuer_chain"])})

    async def qe(request: web.Request) -> web.Response:
        calls.append("qe")
        calls.append(f"update={request.query.get('update')}")
        body = '{"enclaveIdentity": ' + data["qe_identity"] + ', "signature":"' + data["qe_identity_signature"] + '"}'
        return web.Response(text=body, headers={"SGX-Enclave-Identity-Issuer-Chain": urlquote(data["qe_identity_issuer_chain"])})

    async def root_crl(request: web.Request) -> web.Response:
        calls.append("rootcrl")
        return web.Response(body=bytes.fromhex(data["root_ca_crl"]))

    app = web.Application()
    app.router.add_get("/sgx/certification/v4/pckcrl", pckcrl)
    app.router.add_get("/tdx/certification/v4/tcb", tcb)
    app.router.add_get("/tdx/certification/v4/qe/identity", qe)
    app.router.add_get("/IntelSGXRootCA.der", root_crl)
    return app


@pytest.fixture
async def pcs(unused_tcp_port: int) -> AsyncIterator[tuple[str, list[str]]]:
    calls: list[str] = []
    runner = web.AppRunner(pcs_app(calls))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    yield f"http://127.0.0.1:{unused_tcp_port}", calls
    await runner.cleanup()


async def test_fetcher_rebuilds_the_bundle(pcs: tuple[str, list[str]]) -> None:
    base, calls = pcs
    bundle = await PcsCollateralFetcher(base, 5, f"{base}/IntelSGXRootCA.der").fetch("b0c06f000000", "platform")
    assert bundle == V4.collateral
    assert calls == ["pckcrl", "tcb b0c06f000000", "update=early", "qe", "update=early", "rootcrl"]


async def test_fetcher_asks_for_the_configured_tcb_update_and_uses_only_the_host(pcs: tuple[str, list[str]]) -> None:
    # upstream's documented value keeps the PCS path, which upstream drops: endpoints are built from the host
    base, calls = pcs
    fetcher = PcsCollateralFetcher(f"{base}/sgx/certification/v4/", 5, f"{base}/IntelSGXRootCA.der", tcb_update_type="standard")
    assert await fetcher.fetch("b0c06f000000", "platform") == V4.collateral
    assert calls == ["pckcrl", "tcb b0c06f000000", "update=standard", "qe", "update=standard", "rootcrl"]


class RecordingStore(MemoryStore):
    """Keeps every entry regardless of the wall clock (the corpus collateral expired in 2025) and records expiries."""

    def __init__(self) -> None:
        super().__init__()
        self.expiries: dict[str, float | None] = {}

    async def put(self, namespace: str, key: str, value: bytes, *, overwrite: bool = True, expires_at: float | None = None) -> bool:
        self.expiries[key] = expires_at
        return await super().put(namespace, key, value, overwrite=overwrite)


async def test_source_caches_in_the_store_until_next_update(pcs: tuple[str, list[str]]) -> None:
    base, calls = pcs
    store = RecordingStore()
    fetcher = PcsCollateralFetcher(base, 5, f"{base}/IntelSGXRootCA.der")
    source = CollateralSource({}, fetcher, store, clock=lambda: V4.now)
    assert source.lookup("b0c06f000000", "platform") is None
    await source.prepare("b0c06f000000", "platform")
    await source.prepare("b0c06f000000", "platform")
    assert source.lookup("b0c06f000000", "platform") == V4.collateral
    assert calls.count("tcb b0c06f000000") == 1
    assert await store.get(NAMESPACE, "b0c06f000000-platform") is not None
    assert store.expiries["b0c06f000000-platform"] == at("2025-07-19T10:00:35Z").timestamp()
    second = CollateralSource({}, fetcher, store, clock=lambda: V4.now)
    await second.prepare("b0c06f000000", "platform")
    assert calls.count("tcb b0c06f000000") == 1  # served from the store


async def test_unreachable_service_is_upstream_error(unused_tcp_port: int) -> None:
    fetcher = PcsCollateralFetcher(f"http://127.0.0.1:{unused_tcp_port}", 2)
    with pytest.raises(UpstreamError, match="collateral service: GET"):
        await fetcher.fetch("b0c06f000000", "platform")


async def test_verifier_prepare_then_evaluate(pcs: tuple[str, list[str]]) -> None:
    import base64

    from attestation_service.core.verifiers.tdx import TdxVerifier

    base, _ = pcs
    fetcher = PcsCollateralFetcher(base, 5, root_crl_url=f"{base}/IntelSGXRootCA.der")
    source = CollateralSource({}, fetcher, MemoryStore())
    verifier = fetching_tdx_verifier(TdxVerifier(source.lookup, verification_time=V4.now), source)
    evidence = {"quote": base64.b64encode(V4.quote).decode(), "cc_eventlog": None}
    await verifier.prepare(evidence)
    [(claims, _)] = verifier.evaluate(evidence, None, None, V4.now)
    assert claims["tcb_status"] == "UpToDate"


def test_grpc_as_refuses_to_start_with_bad_collateral(tmp_path: Path) -> None:
    import subprocess

    from tests.procs import script

    config = tmp_path / "as.toml"
    config.write_text(
        f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{tmp_path / "as.sqlite3"}"\n'
        '[verifier_config.dcap_verifier]\ncollateral_dir = "missing"\n'
    )
    result = subprocess.run([script("grpc-as"), "--config-file", str(config), "--socket", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "collateral" in result.stderr and "no such file or directory" in result.stderr
