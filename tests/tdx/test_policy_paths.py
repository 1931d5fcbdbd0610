"""The real v4 quote through the default `tdx` policy (AS) and through the KBS protocol path.

Through the AS, with reference values registered on its RVPS API, the
default policy reads the quote's claims (mr_td, rtmr_1/rtmr_2, xfam,
tcb_status, debug bit) and affirms it; without them it is contraindicated.
Through the KBS, a recorded quote can never be bound to a fresh nonce and
TEE key, so `/attest` must refuse it at the report-data binding step: the
test proves the KBS hands `tdx` evidence to the DCAP verifier and maps its
rejection to 401 AttestationError.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from attestation_service.core.verifiers.tdx import parse_quote

from tests.kbs.helpers import kbs_toml, make_material
from tests.procs import Proc, free_port, script
from tests.tdx.corpus import V4
from tests.tdx.test_as import collateral_dir, request, start, token_claims
from trustee_common.b64 import std_encode, url_encode
from trustee_common.jose import TeeKeyPair
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc


@pytest.fixture(scope="module")
def v4_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A grpc-as pinned at the v4 corpus time (built-in RVPS) and a KBS in front of it."""
    directory = tmp_path_factory.mktemp("v4-stack")
    collateral_dir(directory)
    assert V4.time is not None
    as_proc, as_port = start(directory, V4.time)
    material = make_material(directory / "material")
    kbs_port = free_port()
    config = directory / "kbs.toml"
    (directory / "repo").mkdir()
    config.write_text(kbs_toml(kbs_port, material, directory / "repo", as_port=as_port))
    kbs_proc = Proc([script("kbs"), "--config-file", str(config)], directory / "kbs.log", port=kbs_port)
    try:
        yield as_port, kbs_port
    finally:
        assert kbs_proc.stop() == 0
        assert as_proc.stop() == 0


async def _status(as_port: int) -> str:
    report_data = parse_quote(V4.quote).body.report_data
    async with grpc.aio.insecure_channel(f"127.0.0.1:{as_port}") as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        response = await stub.AttestationEvaluate(request(V4, raw_runtime_data=url_encode(report_data)))
    submods = token_claims(response.attestation_token)["submods"]
    assert isinstance(submods, dict)
    return str(submods["cpu0"]["ear.status"])


async def _register(as_port: int, values: dict[str, object]) -> None:
    message = {"version": "0.1.0", "type": "sample", "payload": std_encode(json.dumps(values).encode())}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{as_port}") as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        await stub.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=json.dumps(message)))


async def test_default_policy_affirms_the_v4_quote_only_with_its_reference_values(v4_stack: tuple[int, int]) -> None:
    as_port, _ = v4_stack
    assert await _status(as_port) == "contraindicated"
    body = parse_quote(V4.quote).body
    await _register(as_port, {
        "mr_td": [body.mr_td.hex()],
        "rtmr_1": [body.rtmr_1.hex()],
        "rtmr_2": [body.rtmr_2.hex()],
        "xfam": [body.xfam.hex()],
    })
    assert await _status(as_port) == "affirming"
    await _register(as_port, {"mr_td": ["00" * 48]})
    assert await _status(as_port) == "contraindicated"


async def test_kbs_refuses_a_recorded_quote_at_the_binding_step(v4_stack: tuple[int, int], tmp_path: Path) -> None:
    _, kbs_port = v4_stack
    base = f"http://127.0.0.1:{kbs_port}/kbs/v0"
    key = TeeKeyPair.generate().public_jwk()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{base}/auth", json={"version": "0.4.0", "tee": "tdx", "extra-params": ""}) as response:
            assert response.status == 200
            nonce = (await response.json())["nonce"]
        evidence = {"quote": base64.b64encode(V4.quote).decode(), "cc_eventlog": None}
        attestation = {
            "runtime-data": {"nonce": nonce, "tee-pubkey": key},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        async with http.post(f"{base}/attest", json=attestation) as response:
            body = await response.json()
    assert response.status == 401
    assert body["type"].endswith("/AttestationError")
    assert "step 14 (report data binding)" in body["detail"]
