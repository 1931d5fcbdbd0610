"""`swid`/`corim` messages and URI-form names through the KBS admin API, and a policy reading a URI name.

Real `rvps`, `grpc-as` and `kbs` processes: `POST /kbs/v0/reference-value`
forwards to the AS's RVPS proxy, `GET /kbs/v0/reference-value/<id>` reads
back (the id may hold '/', ':' and an empty segment, as in `rvps:///...`),
and an attestation policy naming `rvps:///...:tag` gets that value.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import pytest

from tests.kbs.helpers import Kbs, Material, kbs_toml, start_backend, start_kbs, variant
from tests.kbs.test_e2e import admin
from tests.procs import free_port
from tests.rvps.rim_builders import CORIM_VALUES, SWID_VALUES, corim_message, message, swid_xml
from trustee_common.b64 import url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

as_helpers = importlib.import_module("tests.as.helpers")  # `as` is a keyword
SVN_URI = "rvps:///github.com/confidential-containers/sample/svn:v0.18.0"
URI_POLICY = f"""package policy
import rego.v1
trust_claims := {{"hardware": 2, "executables": 3, "configuration": 2}} if input.sample.svn in query_reference_value("{SVN_URI}")
"""


@dataclass
class FormatStack:
    kbs: Kbs
    material: Material
    as_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[FormatStack]:
    root = tmp_path_factory.mktemp("rv-formats")
    kbs_port = free_port()
    backend = start_backend(root, material)
    try:
        kbs = start_kbs(root / "kbs", kbs_toml(kbs_port, material, root / "kbs" / "repo", as_port=backend.as_port), kbs_port)
        backend.procs.append(kbs.proc)
        yield FormatStack(kbs, material, backend.as_port)
    finally:
        backend.stop()


async def register(stack: FormatStack, text: str) -> tuple[int, Any]:
    return await admin(stack.kbs, stack.material, "POST", "reference-value", data=text.encode())


async def read(stack: FormatStack, name: str) -> tuple[int, Any]:
    return await admin(stack.kbs, stack.material, "GET", f"reference-value/{quote(name, safe='/:')}")


def sample_message(values: dict[str, Any]) -> str:
    return message("sample", json.dumps(values).encode())


async def test_swid_and_corim_registered_through_the_kbs(stack: FormatStack) -> None:
    assert (await register(stack, message("swid", swid_xml().encode())))[0] == 200
    assert (await register(stack, corim_message()))[0] == 200
    for name, value in {**SWID_VALUES, **CORIM_VALUES}.items():
        assert await read(stack, name) == (200, value)


@pytest.mark.parametrize(("text", "expected"), [
    (message("corim", b"\x81" * 40 + b"\x00"), "nested deeper than 32"),
    (message("swid", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'), "DTD or entities"),
    (message("cbor", b"\xa0"), "unknown reference value message type 'cbor'"),
])
async def test_bad_payload_through_the_kbs_is_a_400(stack: FormatStack, text: str, expected: str) -> None:
    status, body = await register(stack, text)
    assert (status, variant(body)) == (400, "RvpsError")
    assert expected in body["detail"]


async def test_uri_name_round_trip_and_policy_lookup(stack: FormatStack) -> None:
    assert (await register(stack, sample_message({SVN_URI: ["1"], "rvps:///other/name": 2})))[0] == 200
    assert await read(stack, SVN_URI) == (200, ["1"])
    # Written as is in the URL path: '/', ':' and the empty segment after 'rvps:' survive.
    assert await admin(stack.kbs, stack.material, "GET", "reference-value/rvps:///other/name") == (200, 2)
    assert (await read(stack, SVN_URI.replace(":v0.18.0", "")))[0] == 404  # no tag is another name
    assert await policy_status(stack) == "affirming"

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.as_port}") as channel:
        rvps = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        reply = await rvps.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id=SVN_URI))
        assert reply.deleted is True
    assert (await read(stack, SVN_URI))[0] == 404
    assert await policy_status(stack) != "affirming"


async def policy_status(stack: FormatStack) -> str:
    """The EAR status of a sample attestation under a policy that reads `SVN_URI`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.as_port}") as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        await stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id="uri_names_cpu", policy=url_encode(URI_POLICY.encode())))
        request = as_helpers.attestation(as_helpers.sample_request(nonce="uri"), policy="uri_names")
        reply = await stub.AttestationEvaluate(request, timeout=120)
    claims = json.loads(base64.urlsafe_b64decode(reply.attestation_token.split(".")[1] + "=="))
    return str(claims["submods"]["cpu0"]["ear.status"])
