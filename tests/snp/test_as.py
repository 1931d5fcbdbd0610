"""The `snp` verifier behind real `grpc-as` processes: offline KDS-layout store, pinned SNP times, default policy."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from attestation_service.core.verifiers.snp import VcekKey, parse_report

from tests.procs import Proc, free_port, script
from tests.snp.corpus import GENOA, INVALID_LEGACY, MILAN, SNP, VLEK, VLEK_EXPIRED, Case, wire_json
from trustee_common.b64 import std_encode, url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

TIMES = sorted({MILAN.time, VLEK.time, GENOA.time})


def offline_store(directory: Path) -> None:
    key = VcekKey.of(parse_report(MILAN.report))
    target = directory / "kds-store" / key.kds_path("Milan")
    target.parent.mkdir(parents=True)
    shutil.copy(SNP / "virtee-milan" / "vcek.der", target)


def start(directory: Path, pinned: str) -> tuple[Proc, int]:
    config = directory / "as.toml"
    config.write_text(
        f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n'
        "[verifier_config.snp_verifier]\n"
        'vcek_sources = [{ type = "OfflineStore", path = "kds-store" }]\n'
        f'verification_time = "{pinned}"  # test-only\n'
    )
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    return proc, port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """One AS per corpus time (the pinned SNP time is per process)."""
    procs: list[Proc] = []
    ports: dict[str, int] = {}
    try:
        for time in TIMES:
            directory = tmp_path_factory.mktemp("snp-as")
            offline_store(directory)
            proc, ports[time] = start(directory, time)
            procs.append(proc)
        yield ports
    finally:
        for proc in procs:
            assert proc.stop() == 0


@pytest.fixture
async def channels(servers: dict[str, int]) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {time: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for time, port in servers.items()}
    try:
        yield opened
    finally:
        for channel in opened.values():
            await channel.close()


def evidence_of(case: Case) -> dict[str, Any]:
    if case is MILAN:
        return wire_json(case.report)  # no cert_chain: the VCEK comes from the offline store
    return case.wire_json


def request(case: Case, **extra: str) -> pb.AttestationRequest:
    evidence = url_encode(json.dumps(evidence_of(case)).encode())
    item = pb.IndividualAttestationRequest(tee="snp", evidence=evidence, **extra)
    return pb.AttestationRequest(verification_requests=[item], policy_ids=["default"])


async def evaluate(channels: dict[str, grpc.aio.Channel], case: Case, **extra: str) -> dict[str, Any]:
    stub = attestation_pb2_grpc.AttestationServiceStub(channels[case.time])
    response = await stub.AttestationEvaluate(request(case, **extra))
    payload = response.attestation_token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    submod: dict[str, Any] = claims["submods"]["cpu0"]
    return submod


async def register(channel: grpc.aio.Channel, values: dict[str, object]) -> None:
    message = {"version": "0.1.0", "type": "sample", "payload": std_encode(json.dumps(values).encode())}
    stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
    await stub.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=json.dumps(message)))


def reference_values(case: Case) -> dict[str, object]:
    report = parse_report(case.report)
    tcb = report.reported_tcb
    return {
        "snp_launch_measurement": [report.measurement.hex()],
        "snp_bootloader": [tcb.bootloader], "snp_microcode": [tcb.microcode], "snp_snp_svn": [tcb.snp], "snp_tee_svn": [tcb.tee],
    }


@pytest.mark.parametrize("case", [MILAN, GENOA, VLEK], ids=lambda c: c.name)
async def test_valid_corpus_cases(channels: dict[str, grpc.aio.Channel], case: Case) -> None:
    report_data = parse_report(case.report).report_data
    submod = await evaluate(channels, case, raw_runtime_data=url_encode(report_data))
    annotated = submod["ear.veraison.annotated-evidence"]
    assert annotated["report_data"] == report_data.hex()
    assert annotated["snp"]["vmpl"] == case.vmpl
    assert annotated["snp"]["measurement"] == parse_report(case.report).measurement.hex()


@pytest.mark.parametrize("case", [VLEK_EXPIRED, INVALID_LEGACY], ids=lambda c: c.name)
async def test_rejected_corpus_cases(channels: dict[str, grpc.aio.Channel], case: Case) -> None:
    if case is INVALID_LEGACY:
        case = MILAN  # the fake VCEK rides in the evidence's cert_chain; the store's genuine one is not consulted
        evidence = wire_json(MILAN.report, INVALID_LEGACY.certificates)
        item = pb.IndividualAttestationRequest(tee="snp", evidence=url_encode(json.dumps(evidence).encode()))
        call = pb.AttestationRequest(verification_requests=[item], policy_ids=["default"])
    else:
        call = request(case)
    stub = attestation_pb2_grpc.AttestationServiceStub(channels[case.time])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AttestationEvaluate(call)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(caught.value.trailing_metadata() or ()).get("trustee-error-variant") == "AttestationError"
    assert "step 5 (AMD certificate chain)" in (caught.value.details() or "")


async def test_wrong_report_data_rejected(channels: dict[str, grpc.aio.Channel]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluate(channels, GENOA, raw_runtime_data=url_encode(b"\x01" * 64))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "step 8 (report data binding)" in (caught.value.details() or "")


async def test_init_data_binding(channels: dict[str, grpc.aio.Channel]) -> None:
    host_data = parse_report(GENOA.report).host_data
    submod = await evaluate(channels, GENOA, init_data_digest=url_encode(host_data + bytes(16)))  # sha384: truncated to 32
    assert submod["ear.veraison.annotated-evidence"]["init_data"] == host_data.hex()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluate(channels, GENOA, init_data_digest=url_encode(b"\x01" * 32))
    assert "step 9 (init data binding)" in (caught.value.details() or "")


async def test_default_policy_affirms_vmpl0_and_contraindicates_vmpl1(channels: dict[str, grpc.aio.Channel]) -> None:
    assert (await evaluate(channels, GENOA))["ear.status"] == "contraindicated"  # no reference values yet
    await register(channels[GENOA.time], reference_values(GENOA))
    genoa = await evaluate(channels, GENOA)
    assert genoa["ear.status"] == "affirming", genoa["ear.trustworthiness-vector"]
    await register(channels[VLEK.time], reference_values(VLEK))
    vlek = await evaluate(channels, VLEK)
    vector = vlek["ear.trustworthiness-vector"]
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (3, 2, 96)
    assert vlek["ear.status"] == "contraindicated"


async def test_missing_vcek_is_refused(channels: dict[str, grpc.aio.Channel]) -> None:
    stub = attestation_pb2_grpc.AttestationServiceStub(channels[GENOA.time])
    evidence = wire_json(GENOA.report)  # no cert_chain, and the store only holds the Milan VCEK
    item = pb.IndividualAttestationRequest(tee="snp", evidence=url_encode(json.dumps(evidence).encode()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AttestationEvaluate(pb.AttestationRequest(verification_requests=[item], policy_ids=["default"]))
    assert "step 3 (endorsement key): no VCEK certificate" in (caught.value.details() or "")
