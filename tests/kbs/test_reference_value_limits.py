"""Reference values near the size caps, through real `rvps`, `grpc-as` and `kbs` processes.

Before the caps, reference values over 4 MiB in total broke every
attestation: the AS fetched them all in one `ListReferenceValues` reply,
which gRPC refused (message limit). Now the RVPS keeps the live total
within `max_total_bytes` (default 4 MiB) and one value within
`max_value_bytes` (default 1 MiB), refusing a registration past either with
a 400 naming the cap, every gRPC hop accepts 8 MiB messages, and the AS
asks only for the values its policy names. Default caps here, so the test
also shows that they fit the gRPC limits.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from rvps.core.limits import DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_VALUE_BYTES, RECORD_OVERHEAD_BYTES
from tests.kbs.helpers import Kbs, Material, kbs_toml, start_backend, start_kbs, variant
from tests.kbs.test_e2e import admin, guest, prepare
from tests.procs import free_port
from trustee_common.b64 import url_encode
from trustee_common.serving import MAX_MESSAGE_BYTES
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

as_helpers = importlib.import_module("tests.as.helpers")  # `as` is a keyword
#: Asks for a reference value by a computed name, so the AS fetches every live value (List without names).
EVERY_VALUE_POLICY = """package policy
import rego.v1
name := concat("", ["s", "vn"])
trust_claims := {"hardware": 2, "executables": 3, "configuration": 2} if input.sample.svn in query_reference_value(name)
"""


@dataclass
class LimitStack:
    kbs: Kbs
    material: Material
    as_port: int



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[LimitStack]:
    root = tmp_path_factory.mktemp("rv-limits")
    kbs_port = free_port()
    backend = start_backend(root, material)
    procs, as_port = backend.procs, backend.as_port  # the KBS processes are added: stop() ends them all
    try:
        kbs = start_kbs(root / "kbs", kbs_toml(kbs_port, material, root / "kbs" / "repo", as_port=as_port, payload_mib=16), kbs_port)
        procs.append(kbs.proc)
        yield LimitStack(kbs, material, as_port)
    finally:
        backend.stop()


@pytest.fixture
async def rvps_proxy(stack: LimitStack) -> AsyncIterator[Any]:
    """The RVPS API on the AS port; every value is deleted after the test."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.as_port}") as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        yield stub
        for name in await stored_sizes(stub):
            await stub.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id=name))


async def stored_sizes(rvps_proxy: Any) -> dict[str, int]:
    """What each live record counts toward max_total_bytes (rvps/core/limits.py)."""
    reply = await rvps_proxy.ListReferenceValues(reference_pb2.ReferenceValueListRequest())
    return {r.name: len(r.name.encode()) + len(r.value.encode()) + RECORD_OVERHEAD_BYTES for r in reply.reference_values}


def rv_message(values: dict[str, Any]) -> bytes:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}).encode()


def string_value(name: str, record_bytes: int) -> dict[str, str]:
    """A string value whose record counts `record_bytes` toward the total."""
    return {name: "x" * (record_bytes - len(name) - RECORD_OVERHEAD_BYTES - 2)}


async def register(stack: LimitStack, values: dict[str, Any]) -> tuple[int, Any]:
    return await admin(stack.kbs, stack.material, "POST", "reference-value", data=rv_message(values))


async def attest_through_kbs(stack: LimitStack, path: str) -> None:
    """A sample guest gets a resource: attestation with the default policy (named values only)."""
    await prepare(stack.kbs, stack.material, path, b"still released")
    async with guest(stack.kbs) as client:
        assert await client.get_resource(f"resource/{path}") == b"still released"


async def every_value_status(stack: LimitStack) -> str:
    """Attestation with a policy that makes the AS fetch every live value."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.as_port}") as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        policy = url_encode(EVERY_VALUE_POLICY.encode())
        await stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id="every_cpu", policy=policy))
        request = as_helpers.attestation(as_helpers.sample_request(nonce="every"), policy="every")
        reply = await stub.AttestationEvaluate(request, timeout=120)
    claims = json.loads(base64.urlsafe_b64decode(reply.attestation_token.split(".")[1] + "=="))
    return str(claims["submods"]["cpu0"]["ear.status"])


async def test_just_under_the_total_cap_attestation_works_and_past_it_registration_is_refused(
    stack: LimitStack, rvps_proxy: Any
) -> None:
    assert (await register(stack, as_helpers.SAMPLE_RVS))[0] == 200
    big = DEFAULT_MAX_VALUE_BYTES - 2  # JSON text with its quotes: exactly the per-value cap
    for i in range(3):
        assert (await register(stack, {f"big_{i}": "x" * big}))[0] == 200
    room = DEFAULT_MAX_TOTAL_BYTES - sum((await stored_sizes(rvps_proxy)).values())
    assert (await register(stack, string_value("filler", room - 16)))[0] == 200
    assert DEFAULT_MAX_TOTAL_BYTES - 16 == sum((await stored_sizes(rvps_proxy)).values())

    await attest_through_kbs(stack, "limits/under/cap")
    assert await every_value_status(stack) == "affirming"

    # Before the caps this was accepted, and every attestation then failed (List reply over 4 MiB).
    status, body = await register(stack, {"one_too_many": "x" * 500_000})
    assert (status, variant(body)) == (400, "RvpsError")
    assert f"cap of {DEFAULT_MAX_TOTAL_BYTES} bytes (max_total_bytes)" in body["detail"]
    status, body = await admin(stack.kbs, stack.material, "GET", "reference-value/one_too_many")
    assert status == 404
    await attest_through_kbs(stack, "limits/past/cap")
    assert await every_value_status(stack) == "affirming"


async def test_one_value_over_its_cap_is_refused_with_the_cap_named(stack: LimitStack, rvps_proxy: Any) -> None:
    status, body = await register(stack, {"too_big": "x" * (DEFAULT_MAX_VALUE_BYTES - 1)})
    assert (status, variant(body)) == (400, "RvpsError")
    assert f"{DEFAULT_MAX_VALUE_BYTES + 1} bytes" in body["detail"] and "(max_value_bytes)" in body["detail"]
    assert await stored_sizes(rvps_proxy) == {}


async def test_message_over_the_grpc_limit_is_413_naming_it(stack: LimitStack, rvps_proxy: Any) -> None:
    status, body = await register(stack, {"huge": "x" * (MAX_MESSAGE_BYTES * 3 // 4)})
    assert (status, variant(body)) == (413, "PayloadTooLarge")
    assert "gRPC message" in body["detail"]
    assert await stored_sizes(rvps_proxy) == {}
