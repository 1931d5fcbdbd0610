"""The `tdx` verifier behind a real `grpc-as` with an offline collateral directory and a pinned DCAP time."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from attestation_service.core.verifiers.tdx import TdxCollateral, parse_quote

from tests.procs import Proc, free_port, script
from tests.tdx.corpus import DEBUG_TD, GCP, V4, V5, Case
from trustee_common.b64 import url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc


def collateral_dir(directory: Path) -> Path:
    target = directory / "dcap-collateral"
    target.mkdir()
    for case in (V4, V5):
        assert case.collateral_path is not None and case.collateral is not None
        fmspc, ca = case.collateral.key()
        shutil.copy(case.collateral_path, target / f"{fmspc}-{ca}.json")
    return target


def start(directory: Path, pinned: str) -> tuple[Proc, int]:
    config = directory / "as.toml"
    config.write_text(
        f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n'
        '[verifier_config.dcap_verifier]\ncollateral_dir = "dcap-collateral"\n'
        f'verification_time = "{pinned}"  # test-only\n'
    )
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    return proc, port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """One AS per corpus time (the pinned DCAP time is per process)."""
    procs: list[Proc] = []
    ports: dict[str, int] = {}
    try:
        for case in (V4, V5):
            directory = tmp_path_factory.mktemp(case.name)
            collateral_dir(directory)
            assert case.time is not None
            proc, ports[case.name] = start(directory, case.time)
            procs.append(proc)
        yield ports
    finally:
        for proc in procs:
            assert proc.stop() == 0


@pytest.fixture
async def stubs(servers: dict[str, int]) -> AsyncIterator[dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]]:
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for name, port in servers.items()}
    try:
        yield {name: attestation_pb2_grpc.AttestationServiceStub(channel) for name, channel in channels.items()}
    finally:
        for channel in channels.values():
            await channel.close()


def request(case: Case, **extra: str) -> pb.AttestationRequest:
    evidence = {"quote": base64.b64encode(case.quote).decode(), "cc_eventlog": None}
    item = pb.IndividualAttestationRequest(tee="tdx", evidence=url_encode(json.dumps(evidence).encode()), **extra)
    return pb.AttestationRequest(verification_requests=[item], policy_ids=["default"])


def token_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def test_v4_up_to_date(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]) -> None:
    report_data = parse_quote(V4.quote).body.report_data
    response = await stubs[V4.name].AttestationEvaluate(request(V4, raw_runtime_data=url_encode(report_data)))
    claims = token_claims(response.attestation_token)
    submods = claims["submods"]
    assert isinstance(submods, dict)
    annotated = submods["cpu0"]["ear.veraison.annotated-evidence"]
    assert annotated["tdx"]["tcb_status"] == "UpToDate"
    assert annotated["tdx"]["collateral_expiration_status"] == "0"
    assert annotated["tdx"]["quote"]["header"]["tee_type"] == "81000000"
    assert annotated["report_data"] == report_data.hex()
    assert annotated["init_data"] == "00" * 48


async def test_v4_wrong_report_data(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[V4.name].AttestationEvaluate(request(V4, raw_runtime_data=url_encode(b"\x01" * 64)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "step 14 (report data binding)" in (caught.value.details() or "")


async def test_v5_tcb_not_supported(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[V5.name].AttestationEvaluate(request(V5))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(caught.value.trailing_metadata() or ()).get("trustee-error-variant") == "AttestationError"
    assert "step 11 (platform TCB level): TCB_NOT_SUPPORTED: no TCB level matches" in (caught.value.details() or "")


async def test_v4_outside_its_window(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[V5.name].AttestationEvaluate(request(V4))  # the 2026 server: the 2025 collateral has expired
    assert "step 3 (collateral integrity): collateral is not current" in (caught.value.details() or "")


@pytest.mark.parametrize("case", [GCP, DEBUG_TD], ids=lambda c: c.name)
async def test_without_collateral_the_as_refuses(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub], case: Case) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[V4.name].AttestationEvaluate(request(case))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = caught.value.details() or ""
    assert "step 3 (collateral integrity): no collateral for FMSPC" in details
    assert "([verifier_config.dcap_verifier] collateral_dir or collateral_service)" in details


def test_collateral_key_of_the_corpus() -> None:
    assert isinstance(V4.collateral, TdxCollateral)
    assert V4.collateral.key() == ("b0c06f000000", "platform")


async def test_init_data_digest_binding(stubs: dict[str, attestation_pb2_grpc.AttestationServiceAsyncStub]) -> None:
    response = await stubs[V4.name].AttestationEvaluate(request(V4, init_data_digest=url_encode(bytes(48))))
    assert response.attestation_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs[V4.name].AttestationEvaluate(request(V4, init_data_digest=url_encode(b"\x01" * 32)))
    assert "step 15 (init data binding)" in (caught.value.details() or "")
