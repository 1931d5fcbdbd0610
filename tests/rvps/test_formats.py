"""The `swid` and `corim` extractors and URI-form names, through a real `rvps` process.

Messages go in through `rvps-tool register` and through gRPC; values come
back through `rvps-tool query` and gRPC. Hostile payloads are refused with
INVALID_ARGUMENT naming the problem, and store nothing.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import grpc
import pytest
from cbor2 import CBORTag

from tests.procs import script
from tests.rvps.conftest import RvpsProcess, start_rvps, write_config
from tests.rvps.rim_builders import (
    CORIM_VALUES,
    SWID_VALUES,
    comid,
    corim_bytes,
    corim_map,
    corim_message,
    message,
    signed_corim_bytes,
    swid_xml,
)
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

Stub = Any
URI_NAME = "rvps:///github.com/confidential-containers/tdx/mr_td:v0.18.0"


def rvps_tool(rvps: RvpsProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("rvps-tool"), *args, "-a", rvps.address], capture_output=True, text=True, timeout=60, check=False)


def register_file(rvps: RvpsProcess, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "message.json"
    path.write_text(text)
    return rvps_tool(rvps, "register", "-p", str(path))


async def query(stub: Stub, name: str) -> Any:
    reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
    return json.loads(reply.reference_value_results) if reply.HasField("reference_value_results") else "<absent>"


async def names(stub: Stub) -> set[str]:
    reply = await stub.ListReferenceValues(pb.ReferenceValueListRequest())
    return {r.name for r in reply.reference_values}


async def delete_all(stub: Stub, wanted: set[str]) -> None:
    for name in wanted:
        await stub.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id=name))


async def test_swid_through_rvps_tool(rvps: RvpsProcess, stub: Stub, tmp_path: Path) -> None:
    done = register_file(rvps, tmp_path, message("swid", swid_xml().encode()))
    assert done.returncode == 0, done.stderr
    for name, value in SWID_VALUES.items():
        shown = rvps_tool(rvps, "query", "-r", name)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == value
        assert await query(stub, name) == value
    # An all-zero measurement and a non-Measurement resource give nothing.
    assert {n for n in await names(stub) if n.startswith("NVIDIA")} == set(SWID_VALUES)
    await delete_all(stub, set(SWID_VALUES))


async def test_swid_through_grpc_with_spaces_and_dashes(stub: Stub) -> None:
    xml = swid_xml("Acme Big Corp", "ed-2", f'<Resource type="Measurement" index="x-1" h:Hash0="{"9" * 96}"/>')
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message("swid", xml.encode())))
    assert await query(stub, "Acme_Big_Corp.ed_2.measurement_x_1") == ["9" * 96]
    await delete_all(stub, {"Acme_Big_Corp.ed_2.measurement_x_1"})


async def test_corim_through_grpc(stub: Stub) -> None:
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=corim_message()))
    for name, value in CORIM_VALUES.items():
        assert await query(stub, name) == value
    assert CORIM_VALUES.keys() <= await names(stub)
    await delete_all(stub, set(CORIM_VALUES))


@pytest.mark.parametrize("payload", [corim_bytes(outer=()), corim_bytes(outer=(500,)), signed_corim_bytes()],
                         ids=["bare-501", "under-500", "cose-sign1"])
async def test_corim_wrappings_through_rvps_tool(rvps: RvpsProcess, stub: Stub, tmp_path: Path, payload: bytes) -> None:
    done = register_file(rvps, tmp_path, corim_message(payload))
    assert done.returncode == 0, done.stderr
    name = "ACME Inc/Road Runner 2/firmware/SN-0001/digests"
    shown = rvps_tool(rvps, "query", "-r", name)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == CORIM_VALUES[name]
    await delete_all(stub, set(CORIM_VALUES))


async def test_uri_names_round_trip(rvps: RvpsProcess, stub: Stub, tmp_path: Path) -> None:
    other = "rvps:///coco/kata/tdx/rtmr0:latest"
    sample = base64.b64encode(json.dumps({URI_NAME: ["mrtd"], other: 7}).encode()).decode()
    done = register_file(rvps, tmp_path, json.dumps({"version": "0.1.0", "type": "sample", "payload": sample}))
    assert done.returncode == 0, done.stderr
    assert await query(stub, URI_NAME) == ["mrtd"]
    assert json.loads(rvps_tool(rvps, "query", "-r", other).stdout) == 7
    # No tag and another tag are other names (upstream's URI note: no default tag).
    assert await query(stub, URI_NAME.rsplit(":", 1)[0]) == "<absent>"
    assert await query(stub, URI_NAME.replace("v0.18.0", "latest")) == "<absent>"
    listing = json.loads(rvps_tool(rvps, "query").stdout)
    assert {URI_NAME, other} <= {r["name"] for r in listing}
    reply = await stub.ListReferenceValues(pb.ReferenceValueListRequest(names=[URI_NAME, "rvps:///absent:x"]))
    assert [r.name for r in reply.reference_values] == [URI_NAME]

    deleted = rvps_tool(rvps, "delete", "-r", URI_NAME)
    assert deleted.returncode == 0, deleted.stderr
    assert await query(stub, URI_NAME) == "<absent>"
    assert (await stub.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id=other))).deleted is True
    assert not {URI_NAME, other} & await names(stub)


def _dtd(body: str) -> bytes:
    return f'<?xml version="1.0"?><!DOCTYPE SoftwareIdentity [{body}]>'.encode() + swid_xml().split("?>", 1)[1].encode()


BAD_SWID = [
    (_dtd('<!ENTITY lol "lol">'), "DTD or entities"),
    (_dtd('<!ENTITY xxe SYSTEM "file:///etc/passwd">'), "DTD or entities"),
    (b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x/>', "DTD or entities"),
    (b"<SoftwareIdentity", "not well-formed XML"),
    (b"\xff\xfe<x/>", "not UTF-8"),
    (swid_xml().replace("Meta", "Meta2").encode(), "no SWID Meta element"),
    (swid_xml().replace('edition="GPU"', "").encode(), "no edition attribute"),
    (swid_xml().replace("rim:PlatformManufacturerStr", "PlatformManufacturerStr").encode(), "PlatformManufacturerStr"),
    (swid_xml().replace('index="12" ', "").encode(), "no index attribute"),
    (swid_xml().replace("Payload", "Body").encode(), "no SWID Payload element"),
    (swid_xml(resources="").encode(), "no reference values"),
]


def _comid_triple(triple: Any) -> bytes:
    return corim_bytes([comid(triple)], outer=())


BAD_CORIM = [
    (b"\xa1\x01", "truncated"),
    (corim_bytes() + b"\x00", "bytes after the first CBOR item"),
    (b"\x81" * 40 + b"\x00", "nested deeper than 32"),
    (cbor2.dumps([0] * 200_001), "more than 200000 CBOR items"),
    (cbor2.dumps(b"x" * (4 * 1024 * 1024 + 1)), "above the limit of 4194304"),
    (b"\x9b" + b"\xff" * 8, "truncated"),
    (cbor2.dumps(CBORTag(28, [1])), "tag 28"),
    (cbor2.dumps(CBORTag(600, corim_map())), "CBOR tag 600 is not a CoRIM"),
    (cbor2.dumps(CBORTag(501, [1, 2])), "must be a CBOR map"),
    (cbor2.dumps(CBORTag(18, [b"", {}, None, b""])), "detached payload"),
    (cbor2.dumps(CBORTag(501, {0: "no tags"})), "'tags' (key 1)"),
    (cbor2.dumps(CBORTag(501, corim_map(CBORTag(506, b"\xff")))), "CoMID tags[0] is not valid CBOR"),
    (cbor2.dumps(CBORTag(501, corim_map(CBORTag(506, cbor2.dumps({1: {}}))))), "'triples' (key 4)"),
    (_comid_triple([{0: {1: 5}}, [{1: {2: []}}]]), "class 'vendor' must be text"),
    (_comid_triple([{0: {1: "v"}}, [{0: 1}]]), "'mval' (key 1)"),
    (_comid_triple([{0: {1: "v"}}, [{1: {2: [[1, "not bytes"]]}}]]), "a digest must be [algorithm, bytes]"),
    (_comid_triple([{0: {1: "v"}}, [{0: CBORTag(37, b"short"), 1: {2: []}}]]), "not valid CBOR"),
    (_comid_triple([{0: {1: "v"}}, [{1: {3: {}}}]]), "no reference values"),
    (b"not cbor at all", "a CoRIM must be a CBOR map, got str"),  # 'n' heads a 14-byte text string
    (b'{"json": "object"}', "not valid CBOR"),
]


@pytest.mark.parametrize(("kind", "payload", "expected"),
                         [("swid", p, e) for p, e in BAD_SWID] + [("corim", p, e) for p, e in BAD_CORIM])
async def test_malformed_payload_refused_and_nothing_stored(stub: Stub, kind: str, payload: bytes, expected: str) -> None:
    before = await names(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message(kind, payload)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (caught.value.details() or ""), caught.value.details()
    assert await names(stub) == before


def test_malformed_payload_refused_by_rvps_tool(rvps: RvpsProcess, tmp_path: Path) -> None:
    done = register_file(rvps, tmp_path, message("corim", b"\x81" * 40 + b"\x00"))
    assert done.returncode == 1
    assert "error: RvpsError:" in done.stderr and "nested deeper than 32" in done.stderr


def test_no_traceback_after_bad_payloads(rvps: RvpsProcess) -> None:
    assert "Traceback" not in rvps.proc.output()


async def test_upstream_extractors_config_is_accepted(tmp_path: Path) -> None:
    started = start_rvps(tmp_path, write_config(tmp_path, extra="extractors = { swid_extractor = {} }"))
    try:
        async with grpc.aio.insecure_channel(started.address) as channel:
            stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message("swid", swid_xml().encode())))
            await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=corim_message()))
            assert await query(stub, "NVIDIA_Corporation.GPU.measurement_1_3") == SWID_VALUES["NVIDIA_Corporation.GPU.measurement_1_3"]
    finally:
        assert started.proc.stop() == 0, started.proc.output()


@pytest.mark.parametrize(("extra", "expected"), [
    ("extractors = { in_toto = {} }", "unknown key(s) in config"),
    ("extractors = { swid_extractor = { strict = true } }", "swid_extractor: strict"),
])
def test_unknown_extractor_config_fails_start(tmp_path: Path, extra: str, expected: str) -> None:
    result = subprocess.run([script("rvps"), "-c", str(write_config(tmp_path, extra=extra)), "-a", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr
