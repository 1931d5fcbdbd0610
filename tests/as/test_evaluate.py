"""AttestationEvaluate through a real grpc-as: tokens, claims, reference values, bad evidence."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from trustee_common.b64 import url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import reference_pb2

from .conftest import Stack, sample_message
from .helpers import (
    SAMPLE_RVS,
    TEE_PUBKEY,
    attestation,
    b64url_json,
    device_request,
    rpc_error,
    sample_request,
    verify_token,
)

Stub = Any


async def delete_sample_rvs(rvps_proxy: Stub) -> None:
    for name in [*SAMPLE_RVS, "device_svn"]:
        await rvps_proxy.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id=name))


@pytest.fixture
async def no_rvs(rvps_proxy: Stub) -> None:
    await delete_sample_rvs(rvps_proxy)


@pytest.fixture
async def sample_rvs(rvps_proxy: Stub) -> AsyncIterator[None]:
    await rvps_proxy.RegisterReferenceValue(sample_message(SAMPLE_RVS))
    yield
    await delete_sample_rvs(rvps_proxy)


async def evaluate(stub: Stub, request: pb.AttestationRequest, stack: Stack) -> dict[str, Any]:
    reply = await stub.AttestationEvaluate(request)
    return verify_token(reply.attestation_token, stack.keys.ca_cert.read_bytes())


async def test_sample_without_reference_values_is_contraindicated(attestation_stub: Stub, stack: Stack, no_rvs: None) -> None:
    claims = await evaluate(attestation_stub, attestation(sample_request(nonce="n1")), stack)
    assert claims["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert claims["iss"] == "CoCo-Attestation-Service"
    assert claims["ear.verifier-id"] == {"developer": "https://confidentialcontainers.org", "build": "attestation-service 0.1.0"}
    assert claims["exp"] - claims["iat"] == 300
    assert list(claims["submods"]) == ["cpu0"]
    cpu = claims["submods"]["cpu0"]
    assert cpu["ear.status"] == "contraindicated"
    assert cpu["ear.appraisal-policy-id"] == "default"
    assert cpu["ear.trustworthiness-vector"] == {
        "instance-identity": 0,
        "configuration": 2,
        "executables": 33,
        "file-system": 0,
        "hardware": 97,
        "runtime-opaque": 0,
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    evidence = cpu["ear.veraison.annotated-evidence"]
    assert evidence["sample"] == {"svn": "1", "launch_digest": "abcde", "platform_version": {"major": 1, "minor": 4}, "debug": False}
    assert evidence["runtime_data_claims"] == {"additional-evidence": "", "nonce": "n1", "tee-pubkey": TEE_PUBKEY}
    assert base64.b64decode(evidence["report_data"]) == hashlib.sha384(
        json.dumps(evidence["runtime_data_claims"], sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    assert "init_data" not in evidence
    assert "init_data_claims" not in evidence
    assert cpu["ear.trustee.identifiers"] == {"validated": {}}


async def test_sample_with_reference_values_via_proxy_is_affirming(attestation_stub: Stub, stack: Stack, sample_rvs: None) -> None:
    claims = await evaluate(attestation_stub, attestation(sample_request(), policy=None), stack)
    cpu = claims["submods"]["cpu0"]
    assert cpu["ear.status"] == "affirming"
    vector = cpu["ear.trustworthiness-vector"]
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (3, 2, 2)
    assert cpu["ear.appraisal-policy-id"] == "default"


async def test_reference_value_change_applies_to_next_request(
    attestation_stub: Stub, rvps_proxy: Stub, stack: Stack, sample_rvs: None
) -> None:
    await rvps_proxy.RegisterReferenceValue(sample_message({"svn": ["9"]}))
    claims = await evaluate(attestation_stub, attestation(sample_request()), stack)
    assert claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["hardware"] == 97


async def test_device_evidence_becomes_gpu_submod(attestation_stub: Stub, rvps_proxy: Stub, stack: Stack, no_rvs: None) -> None:
    await rvps_proxy.RegisterReferenceValue(sample_message({"device_svn": ["2"]}))
    request = attestation(sample_request(additional='{"sampledevice":{}}'), device_request(), device_request(nonce="other"))
    claims = await evaluate(attestation_stub, request, stack)
    assert sorted(claims["submods"]) == ["cpu0", "gpu0", "gpu1"]
    gpu = claims["submods"]["gpu0"]
    assert gpu["ear.veraison.annotated-evidence"]["sampledevice"] == {"svn": "2"}
    assert gpu["ear.veraison.annotated-evidence"]["runtime_data_claims"] == {"nonce": "bm9uY2U=", "tee-pubkey": TEE_PUBKEY}
    assert gpu["ear.trustworthiness-vector"]["hardware"] == 2
    assert gpu["ear.status"] == "warning"
    assert claims["submods"]["gpu1"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["nonce"] == "other"


INIT_DATA = '''version = "0.1.0"
algorithm = "sha256"

[data]
"aa.toml" = """
[token_configs.kbs]
url = "http://127.0.0.1:8080"
"""
"cdh.toml" = "not = [valid toml"
"policy.rego" = """
package agent_policy

policy_data := {
  "containers": [
    {"OCI": {"Annotations": {"io.kubernetes.cri.image-name": "docker.io/library/busybox:latest"}, "Process": {"User": {"UID": 65535}}}}
  ]
}
"""
"extra" = "kept as text"
'''


async def test_init_data_toml_claims(attestation_stub: Stub, stack: Stack) -> None:
    claims = await evaluate(attestation_stub, attestation(sample_request(init_data_toml=INIT_DATA)), stack)
    cpu = claims["submods"]["cpu0"]
    evidence = cpu["ear.veraison.annotated-evidence"]
    assert base64.b64decode(evidence["init_data"]) == hashlib.sha256(INIT_DATA.encode()).digest()
    init_claims = evidence["init_data_claims"]
    assert init_claims["aa.toml"] == {"token_configs": {"kbs": {"url": "http://127.0.0.1:8080"}}}
    assert init_claims["cdh.toml"] == "not = [valid toml"
    assert init_claims["extra"] == "kept as text"
    assert "policy.rego" not in init_claims
    assert init_claims["agent_policy_claims"]["containers"][0]["OCI"]["Process"]["User"]["UID"] == 65535
    assert cpu["ear.trustee.identifiers"] == {
        "validated": {"container_images": ["docker.io/library/busybox:latest"], "container_uids": [65535]}
    }


async def test_init_data_digest_and_raw_runtime_data(attestation_stub: Stub, stack: Stack) -> None:
    report_data = bytes(range(48))
    evidence = {"svn": "1", "report_data": base64.b64encode(report_data).decode()}
    item = pb.IndividualAttestationRequest(
        tee="sample", evidence=b64url_json(evidence), raw_runtime_data=url_encode(report_data), init_data_digest=url_encode(b"\x01" * 32)
    )
    claims = await evaluate(attestation_stub, attestation(item), stack)
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert annotated["init_data"] == base64.b64encode(b"\x01" * 32).decode()
    assert annotated["init_data_claims"] is None
    assert annotated["runtime_data_claims"] is None


def bound_sample_request(bound: bytes, **extra: Any) -> pb.IndividualAttestationRequest:
    """A sample request whose evidence binds the init-data digest `bound` (our sample attester after BindInitData)."""
    item = sample_request(**extra)
    evidence = json.loads(base64.urlsafe_b64decode(item.evidence + "=" * (-len(item.evidence) % 4)))
    evidence["init_data"] = base64.b64encode(bound).decode()
    item.evidence = b64url_json(evidence)
    return item


async def test_sample_init_data_bound_in_evidence_is_checked(attestation_stub: Stub, stack: Stack) -> None:
    digest = hashlib.sha256(INIT_DATA.encode()).digest()
    claims = await evaluate(attestation_stub, attestation(bound_sample_request(digest, init_data_toml=INIT_DATA)), stack)
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert base64.b64decode(annotated["init_data"]) == digest
    assert annotated["init_data_claims"]["extra"] == "kept as text"
    other = INIT_DATA.replace("kept as text", "changed")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(bound_sample_request(digest, init_data_toml=other)))
    assert rpc_error(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "AttestationError",
                                       "init data does not match the digest bound in the sample evidence")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(bound_sample_request(b"\x01" * 31 + b"!", init_data_toml=INIT_DATA)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_wrong_report_data_is_permission_denied(attestation_stub: Stub) -> None:
    item = sample_request(nonce="n1")
    item.structured_runtime_data = json.dumps({"additional-evidence": "", "nonce": "n2", "tee-pubkey": TEE_PUBKEY})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(item))
    assert rpc_error(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "AttestationError", "report data does not match")


async def test_runtime_data_hash_algorithm_is_honoured(attestation_stub: Stub) -> None:
    item = sample_request()
    item.runtime_data_hash_algorithm = "sha512"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(item))
    assert rpc_error(caught.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "AttestationError")


def _with(**fields: Any) -> pb.IndividualAttestationRequest:
    item = sample_request()
    for name, value in fields.items():
        setattr(item, name, value)
    return item


MALFORMED = [
    (_with(evidence=base64.urlsafe_b64encode(b'{"svn":"1"}').decode()), "evidence"),
    (_with(evidence="not+base64url"), "evidence"),
    (_with(evidence=url_encode(b"{not json")), "evidence: not JSON"),
    (_with(evidence=b64url_json({"svn": 1, "report_data": ""})), "'svn'"),
    (_with(evidence=b64url_json({"svn": "1"})), "'report_data'"),
    (_with(evidence=b64url_json({"svn": "1", "report_data": "%%%"})), "report_data"),
    (_with(tee="not-a-tee"), "unknown TEE"),
    (_with(structured_runtime_data="{"), "structured_runtime_data"),
    (_with(runtime_data_hash_algorithm="md5"), "md5"),
    (_with(init_data_toml='version = "0.1.0"\nalgorithm = "sha1"\n'), "algorithm"),
    (_with(init_data_toml="=broken"), "init_data_toml"),
    (_with(init_data_digest="a=b"), "init_data_digest"),
    # Hostile nesting used to overflow the parser's recursion (INTERNAL) instead of a clear refusal.
    (_with(evidence=url_encode(b"[" * 100_000 + b"]" * 100_000)), "evidence: nested deeper"),
    (_with(structured_runtime_data='{"a":' * 50_000 + "1" + "}" * 50_000), "structured_runtime_data: nested deeper"),
    (_with(init_data_toml='version = "0.1.0"\nalgorithm = "sha256"\nx = ' + "[" * 50_000 + "]" * 50_000), "init_data_toml: nested deeper"),
    (_with(init_data_toml='version = "0.1.0"\nalgorithm = "sha256"\n' + "a." * 2000 + "b = 1"), "init_data_toml: nested deeper"),
    (_with(evidence=b64url_json({"svn": "1", "report_data": "", "x": float("nan")})), "evidence: not JSON"),
]


@pytest.mark.parametrize(("item", "expected"), MALFORMED)
async def test_malformed_request_is_invalid_argument(attestation_stub: Stub, item: pb.IndividualAttestationRequest, expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(item))
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "MalformedRequest")
    assert expected in details
    assert details.startswith("verification_requests[0]: ")


async def test_empty_request_is_invalid_argument(attestation_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(pb.AttestationRequest())
    assert rpc_error(caught.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "MalformedRequest")


async def test_tee_without_verifier_is_clear_error(attestation_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(_with(tee="csv")))
    assert rpc_error(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "AttestationError", "no verifier for tee csv")


def test_no_traceback_in_the_as_log(stack: Stack) -> None:
    assert "Traceback" not in stack.as_proc.output()


async def test_long_client_text_is_clipped_in_the_error(attestation_stub: Stub) -> None:
    """A 100 KB value quoted in an error used to overflow the trailer and come back as a transport failure."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(_with(tee="x" * 100_000)))
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "MalformedRequest")
    assert "unknown TEE" in details and "…" in details and len(details) < 400
