"""Attestation policy administration through a real grpc-as, and its effect on the next token."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc
import pytest

from trustee_common.b64 import url_decode, url_encode
from trustee_pb import attestation_pb2 as pb

from .conftest import Stack, sample_message
from .helpers import attestation, rpc_error, sample_request, verify_token

Stub = Any

HARDWARE_POLICY = """package policy
import rego.v1

default hardware := %d

trust_claims := {"hardware": hardware, "executables": 0}
extensions := [{"name": "custom.marker", "key": 7, "value": {"tee": tee}}]

tee := "sample" if input.sample
"""


def encoded(text: str) -> str:
    return url_encode(text.encode())


async def set_policy(stub: Stub, policy_id: str, text: str) -> None:
    await stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id=policy_id, policy=encoded(text)))


async def cpu_submod(stub: Stub, stack: Stack, policy: str) -> dict[str, Any]:
    reply = await stub.AttestationEvaluate(attestation(sample_request(), policy=policy))
    submod: dict[str, Any] = verify_token(reply.attestation_token, stack.keys.ca_cert.read_bytes())["submods"]["cpu0"]
    return submod


async def test_custom_policy_applies_to_next_request(attestation_stub: Stub, stack: Stack) -> None:
    await set_policy(attestation_stub, "custom_cpu", HARDWARE_POLICY % 40)
    first = await cpu_submod(attestation_stub, stack, "custom")
    assert first["ear.trustworthiness-vector"] == {"executables": 0, "hardware": 40}
    assert first["ear.status"] == "warning"
    assert first["ear.appraisal-policy-id"] == "custom"
    assert first["custom.marker"] == {"tee": "sample"}

    await set_policy(attestation_stub, "custom_cpu", HARDWARE_POLICY % 100)
    second = await cpu_submod(attestation_stub, stack, "custom")
    assert second["ear.status"] == "contraindicated"


async def test_invalid_rego_is_rejected_and_previous_policy_kept(attestation_stub: Stub, stack: Stack) -> None:
    await set_policy(attestation_stub, "keep_cpu", HARDWARE_POLICY % 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_policy(attestation_stub, "keep_cpu", "package policy\n\ntrust_claims := {\n")
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "PolicyEngineError")
    assert "does not compile" in details
    reply = await attestation_stub.GetPolicy(pb.GetPolicyRequest(policy_id="keep_cpu"))
    assert url_decode(reply.policy, "policy").decode() == HARDWARE_POLICY % 5
    assert (await cpu_submod(attestation_stub, stack, "keep"))["ear.status"] == "affirming"


@pytest.mark.parametrize(
    ("policy_id", "policy", "expected"),
    [
        ("bad id", encoded("package policy"), "policy id"),
        ("", encoded("package policy"), "policy id"),
        ("..x", encoded("package policy"), "policy id"),
        ("ok_cpu", "cGFja2FnZSBwb2xpY3k=", "policy"),
        ("ok_cpu", encoded("package other\nx := 1"), "package policy"),
        ("ok_cpu", url_encode(b"\xff\xfe"), "UTF-8"),
    ],
)
async def test_bad_set_policy_requests(attestation_stub: Stub, policy_id: str, policy: str, expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id=policy_id, policy=policy))
    code, _, details = rpc_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


async def test_list_get_delete_policies(attestation_stub: Stub) -> None:
    await set_policy(attestation_stub, "listed_cpu", HARDWARE_POLICY % 1)
    reply = await attestation_stub.ListPolicies(pb.ListPoliciesRequest())
    hashes = {p.policy_id: p.policy_hash for p in reply.policies}
    assert {"default_cpu", "default_gpu", "listed_cpu"} <= set(hashes)
    assert hashes["listed_cpu"] == hashlib.sha384((HARDWARE_POLICY % 1).encode()).hexdigest()
    default = await attestation_stub.GetPolicy(pb.GetPolicyRequest(policy_id="default_cpu"))
    default_text = url_decode(default.policy, "policy").decode()
    assert "package policy" in default_text
    assert hashes["default_cpu"] == hashlib.sha384(default_text.encode()).hexdigest()

    await attestation_stub.DeletePolicy(pb.DeletePolicyRequest(policy_id="listed_cpu"))
    for call, request in [
        (attestation_stub.GetPolicy, pb.GetPolicyRequest(policy_id="listed_cpu")),
        (attestation_stub.DeletePolicy, pb.DeletePolicyRequest(policy_id="listed_cpu")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request)
        assert rpc_error(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "PolicyNotFound")
    reply = await attestation_stub.ListPolicies(pb.ListPoliciesRequest())
    assert "listed_cpu" not in {p.policy_id for p in reply.policies}


async def test_missing_policy_for_class_is_not_found(attestation_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(sample_request(), policy="nosuch"))
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.NOT_FOUND, "PolicyNotFound")
    assert "nosuch_cpu" in details


async def test_policy_with_computed_reference_value_name(attestation_stub: Stub, rvps_proxy: Stub, stack: Stack) -> None:
    policy = """package policy
import rego.v1

default hardware := 97
hardware := 2 if input.sample.svn in query_reference_value(concat("_", ["computed", "svn"]))
trust_claims := {"hardware": hardware}
"""
    await set_policy(attestation_stub, "computed_cpu", policy)
    assert (await cpu_submod(attestation_stub, stack, "computed"))["ear.status"] == "contraindicated"
    await rvps_proxy.RegisterReferenceValue(sample_message({"computed_svn": ["1"]}))
    assert (await cpu_submod(attestation_stub, stack, "computed"))["ear.status"] == "affirming"


@pytest.mark.parametrize(
    ("trust_claims", "expected"),
    [('{"hardwere": 2}', "'hardwere'"), ('{"hardware": "2"}', "'hardware'"), ('{"hardware": 300}', "-128..127")],
)
async def test_bad_trust_claims_are_named(attestation_stub: Stub, trust_claims: str, expected: str) -> None:
    await set_policy(attestation_stub, "broken_cpu", f"package policy\ntrust_claims := {trust_claims}\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(sample_request(), policy="broken"))
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "PolicyEngineError")
    assert expected in details
    assert "broken_cpu" in details


@pytest.mark.parametrize(
    "body",
    [
        'x := 1 if input.sample\nx := 2 if input.sample\ntrust_claims := {"hardware": x}\n',
        'trust_claims := {"hardware": 1 / count([])}\n',
    ],
)
async def test_policy_runtime_error_is_named(attestation_stub: Stub, body: str) -> None:
    await set_policy(attestation_stub, "faulty_cpu", "package policy\n" + body)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await attestation_stub.AttestationEvaluate(attestation(sample_request(), policy="faulty"))
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "PolicyEngineError")
    assert details.startswith("policy faulty_cpu: ")


async def test_policy_without_trust_claims_gives_all_zero(attestation_stub: Stub, stack: Stack) -> None:
    await set_policy(attestation_stub, "empty_cpu", "package policy\n")
    submod = await cpu_submod(attestation_stub, stack, "empty")
    assert set(submod["ear.trustworthiness-vector"].values()) == {0}
    assert len(submod["ear.trustworthiness-vector"]) == 8
    assert submod["ear.status"] == "none"


ESCAPES_INIT_DATA = '''version = "0.1.0"
algorithm = "sha256"

[data]
"note" = "first line\\nsecond \\"line\\"\\t\\u00e9"
'''
ESCAPES_POLICY = r"""package policy
import rego.v1

default hardware := 97

hardware := 2 if input.init_data_claims.note == "first line\nsecond \"line\"\t\u00e9"

trust_claims := {"hardware": hardware, "executables": 0}
"""


async def test_policy_string_escapes_mean_what_opa_says(attestation_stub: Stub, stack: Stack) -> None:
    """A multi-line init-data value compared with an escaped literal (regopy alone compares the escapes as written)."""
    await set_policy(attestation_stub, "escapes_cpu", ESCAPES_POLICY)
    reply = await attestation_stub.AttestationEvaluate(attestation(sample_request(init_data_toml=ESCAPES_INIT_DATA), policy="escapes"))
    submod = verify_token(reply.attestation_token, stack.keys.ca_cert.read_bytes())["submods"]["cpu0"]
    note = submod["ear.veraison.annotated-evidence"]["init_data_claims"]["note"]
    assert note == 'first line\nsecond "line"\té'
    assert submod["ear.trustworthiness-vector"]["hardware"] == 2
