"""grpc-as as a process: JWKS, health, challenges, configuration errors, built-in RVPS, RVPS outage."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.procs import free_port, script
from tests.rvps.rim_builders import CORIM_VALUES, corim_message
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

from .conftest import Stack, sample_message, start_as, write_as_config
from .helpers import SAMPLE_RVS, attestation, rpc_error, sample_request, token_header, verify_token

Stub = Any


async def test_jwks_matches_token_header_key(attestation_stub: Stub, stack: Stack) -> None:
    jwks = json.loads((await attestation_stub.GetJwks(pb.GetJwksRequest())).jwks)
    token = (await attestation_stub.AttestationEvaluate(attestation(sample_request()))).attestation_token
    header_key = token_header(token)["jwk"]
    assert jwks == {"keys": [header_key]}
    assert set(header_key) == {"kty", "crv", "alg", "x", "y", "x5c"}
    assert len(header_key["x5c"]) == 2


async def test_health_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "attestation.AttestationService", "reference.ReferenceValueProviderService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_challenge_is_fresh_nonce(attestation_stub: Stub) -> None:
    nonces = set()
    for _ in range(2):
        reply = await attestation_stub.GetAttestationChallenge(pb.ChallengeRequest(inner={"tee": "sample"}))
        assert len(base64.b64decode(reply.attestation_challenge, validate=True)) == 32
        nonces.add(reply.attestation_challenge)
    assert len(nonces) == 2


@pytest.mark.parametrize(("inner", "expected"), [({"tee": "se"}, "not supported"), ({}, "'tee'"), ({"tee": "x"}, "unknown TEE")])
async def test_bad_challenge_requests(attestation_stub: Stub, inner: dict[str, str], expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.GetAttestationChallenge(pb.ChallengeRequest(inner=inner))
    code, _, details = rpc_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


def run_as_expecting_failure(config: Path) -> str:
    result = subprocess.run(
        [script("grpc-as"), "-c", str(config), "-s", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[attestation_token_broker]\nduration_mins = 5\n", "duration_mins"),
        ("[rvps_config]\ntype = \"GrpcRemote\"\nadress = \"127.0.0.1:1\"\n", "adress"),
        ("[rvps_config]\ntype = \"Remote\"\n", "'Remote'"),
        ("[attestation_token_broker]\nduration_min = 0\n", "duration_min"),
        ("[attestation_token_broker.signer]\nkey_path = \"/nonexistent/token.key\"\n", "/nonexistent/token.key"),
        ("verifier_confg = {}\n", "verifier_confg"),
        ('[rvps_config]\ntype = "GrpcRemote"\nmax_total_bytes = 10\n', 'rvps_config.max_total_bytes applies to type = "BuiltIn" only'),
        ("[rvps_config]\nmax_total_bytes = 7340032\n", "rvps_config.max_total_bytes must be at most 6291456"),
        ("[rvps_config]\nmax_total_bytes = 10\nmax_value_bytes = 11\n", "rvps_config.max_value_bytes (11) must not exceed"),
        ("[rvps_config]\nextractors = { in_toto = {} }\n", "rvps_config.extractors: in_toto"),
    ],
)
def test_bad_config_fails_start_naming_the_problem(tmp_path: Path, body: str, expected: str) -> None:
    stderr = run_as_expecting_failure(write_as_config(tmp_path, body))
    assert expected in stderr


def test_signer_key_must_match_certificate(tmp_path: Path, stack: Stack) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(stack.keys.ca_key.read_bytes())
    body = f'[attestation_token_broker.signer]\nkey_path = "{other}"\ncert_path = "{stack.keys.token_cert_chain}"\n'
    assert "does not hold the signing key" in run_as_expecting_failure(write_as_config(tmp_path, body))


@pytest.fixture(scope="module")
def builtin_as(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A grpc-as with the built-in RVPS (small size caps), no signer (ephemeral key) and verbose_token off, from a JSON config."""
    directory = tmp_path_factory.mktemp("as-builtin")
    config = directory / "as.json"
    settings = {
        "storage_backend": {"storage_type": "Memory"},
        "rvps_config": {"type": "BuiltIn", "max_value_bytes": 2000, "max_total_bytes": 4000, "extractors": {"swid_extractor": {}}},
        "attestation_token_broker": {"verbose_token": False, "issuer_name": "test-issuer"},
    }
    config.write_text(json.dumps(settings))
    proc, port = start_as(directory, config)
    yield f"127.0.0.1:{port}"
    assert proc.stop() == 0
    assert "ephemeral" in proc.log.read_text()


async def test_builtin_rvps_and_ephemeral_key(builtin_as: str) -> None:
    async with grpc.aio.insecure_channel(builtin_as) as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        await reference_pb2_grpc.ReferenceValueProviderServiceStub(channel).RegisterReferenceValue(sample_message(SAMPLE_RVS))
        token = (await stub.AttestationEvaluate(attestation(sample_request()))).attestation_token
        jwks = json.loads((await stub.GetJwks(pb.GetJwksRequest())).jwks)
    assert "x5c" not in token_header(token)["jwk"]
    assert jwks == {"keys": [token_header(token)["jwk"]]}
    claims = verify_token(token, None)
    assert claims["iss"] == "test-issuer"
    assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
    assert set(claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]) == {"nonce", "tee-pubkey"}


async def test_builtin_rvps_extracts_corim(builtin_as: str) -> None:
    async with grpc.aio.insecure_channel(builtin_as) as channel:
        rvps = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        await rvps.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=corim_message()))
        for name, value in CORIM_VALUES.items():
            reply = await rvps.QueryReferenceValue(reference_pb2.ReferenceValueQueryRequest(reference_value_id=name))
            assert json.loads(reply.reference_value_results) == value
            await rvps.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id=name))


async def test_builtin_rvps_enforces_its_size_caps(builtin_as: str) -> None:
    async with grpc.aio.insecure_channel(builtin_as) as channel:
        rvps = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rvps.RegisterReferenceValue(sample_message({"too_big": "x" * 2000}))
        code, variant, details = rpc_error(caught.value)
        assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "RvpsError")
        assert "above the cap of 2000 bytes per value (max_value_bytes)" in details
        await rvps.RegisterReferenceValue(sample_message({"fits": "x" * 1900}))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rvps.RegisterReferenceValue(sample_message({"no_room": "x" * 1900}))
        assert "above the cap of 4000 bytes (max_total_bytes)" in rpc_error(caught.value)[2]
        await rvps.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id="fits"))


async def test_unreachable_rvps_is_unavailable(tmp_path: Path) -> None:
    body = f'[rvps_config]\ntype = "GrpcRemote"\naddress = "127.0.0.1:{free_port()}"\n'
    proc, port = start_as(tmp_path, write_as_config(tmp_path, body))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = attestation_pb2_grpc.AttestationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.AttestationEvaluate(attestation(sample_request()))
    finally:
        assert proc.stop() == 0
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.UNAVAILABLE, "UpstreamUnavailable")
    assert "RVPS" in details
