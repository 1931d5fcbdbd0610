"""The RVPS over real gRPC: register, query, list, delete, validation, expiration, restart."""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.procs import script
from tests.rvps.conftest import RvpsProcess, start_rvps, write_config
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

Stub = Any


def message(values: dict[str, Any], **fields: Any) -> str:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": payload, **fields})


async def query(stub: Stub, name: str) -> Any:
    reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
    return json.loads(reply.reference_value_results) if reply.HasField("reference_value_results") else "<absent>"


async def listed(stub: Stub) -> dict[str, pb.ReferenceValueRecord]:
    reply = await stub.ListReferenceValues(pb.ReferenceValueListRequest())
    return {r.name: r for r in reply.reference_values}


async def test_register_query_list_delete(stub: Stub) -> None:
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message({"crud_svn": ["1", "2"], "crud_major": 1})))
    assert await query(stub, "crud_svn") == ["1", "2"]
    assert await query(stub, "crud_major") == 1
    records = await listed(stub)
    assert json.loads(records["crud_svn"].value) == ["1", "2"]
    expiration = datetime.datetime.fromisoformat(records["crud_svn"].expiration)
    now = datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < expiration - now < datetime.timedelta(days=367)

    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message({"crud_major": {"v": None}})))
    assert await query(stub, "crud_major") == {"v": None}

    reply = await stub.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id="crud_svn"))
    assert reply.deleted is True
    assert await query(stub, "crud_svn") == "<absent>"
    assert "crud_svn" not in await listed(stub)
    again = await stub.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id="crud_svn"))
    assert again.deleted is False


async def test_unknown_name_is_absent(stub: Stub) -> None:
    assert await query(stub, "never_registered") == "<absent>"


BAD_MESSAGES = [
    (json.dumps({"version": "0.2.0", "type": "sample", "payload": "e30="}), "version '0.2.0'"),
    (json.dumps({"version": "0.1.0", "type": "sample", "payload": "not base64!"}), "base64"),
    (json.dumps({"version": "0.1.0", "type": "sample", "payload": "e30"}), "base64"),
    (json.dumps({"version": "0.1.0", "type": "swidx", "payload": "e30="}), "'swidx'"),
    (json.dumps({"version": "0.1.0", "payload": "e30="}), "'type'"),
    (json.dumps({"version": "0.1.0", "type": "sample", "provenance": "e30="}), "provenance"),
    (message({"good": 1, "bad\u0007name": 2}), "'bad\\x07name' is not allowed: only printable"),
    (message({"good": 1, "": 2}), "1-1024 bytes"),
    (message({"good": 1, "n" * 1025: 2}), "1-1024 bytes"),
    (message({"good": 1}, expiration="tomorrow"), "RFC 3339"),
    (message({}), "no reference values"),
    (json.dumps({"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b"[1]").decode()}), "JSON object"),
    ("not json", "not JSON"),
    # Date-times that overflow Python's or the store's range, nesting that overflowed the stack.
    (message({"good": 1}, expiration="9999-12-31T23:59:59-23:59"), "expiration"),
    (message({"good": 1}, expiration="0001-01-01T00:00:00+01:00"), "expiration"),
    (message({"good": 1}, expiration="1969-12-31T23:59:59Z"), "1970..9999"),
    (message({"good": 1}, expiration="99999-01-01T00:00:00Z"), "RFC 3339"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    (message({"good": 1}, payload=base64.b64encode(b'{"good":' + b"[" * 5000 + b"]" * 5000 + b"}").decode()), "nested deeper"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MESSAGES)
async def test_bad_message_rejected_and_nothing_stored(stub: Stub, text: str, expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=text))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (caught.value.details() or "")
    assert dict(caught.value.trailing_metadata() or ())["trustee-error-variant"] == "RvpsError"
    assert await query(stub, "good") == "<absent>"


async def test_expiration_at_the_end_of_the_range_is_stored(stub: Stub) -> None:
    text = message({"far_future": 1}, expiration="9999-12-31T23:59:59Z")
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=text))
    assert await query(stub, "far_future") == 1
    assert (await listed(stub))["far_future"].expiration == "9999-12-31T23:59:59Z"


def test_no_traceback_after_bad_messages(rvps: RvpsProcess) -> None:
    assert "Traceback" not in rvps.proc.output()


async def test_invalid_query_name_rejected(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id="a\nb"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'a\\nb'" in (caught.value.details() or "")


async def test_any_printable_name_is_just_a_name(stub: Stub) -> None:
    """Names are opaque strings (upstream): '..' or '/' lead nowhere, they are hashed into the store key."""
    assert await query(stub, "../x") == "<absent>"
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message({"../x": 1, "/etc/passwd": 2, "a b é": 3})))
    assert [await query(stub, n) for n in ("../x", "/etc/passwd", "a b é")] == [1, 2, 3]


async def test_message_expiration_is_enforced(stub: Stub) -> None:
    past = message({"exp_past": ["1"]}, expiration="2020-01-01T00:00:00Z")
    future = message({"exp_future": ["1"]}, expiration="2998-05-06T07:08:09+02:00")
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=past))
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=future))
    assert await query(stub, "exp_past") == "<absent>"
    assert await query(stub, "exp_future") == ["1"]
    records = await listed(stub)
    assert "exp_past" not in records
    assert records["exp_future"].expiration == "2998-05-06T05:08:09Z"


async def test_startup_values_file_loaded_with_expiration(stub: Stub) -> None:
    assert await query(stub, "file_live") == ["from-file"]
    assert await query(stub, "file_dated") == 7
    assert await query(stub, "file_expired") == "<absent>"
    records = await listed(stub)
    assert records["file_dated"].expiration == "2999-01-02T03:04:05Z"
    assert "file_expired" not in records


async def test_health_serving(rvps: RvpsProcess) -> None:
    async with grpc.aio.insecure_channel(rvps.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "reference.ReferenceValueProviderService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_restart_keeps_data(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = start_rvps(tmp_path, config)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            await reference_pb2_grpc.ReferenceValueProviderServiceStub(channel).RegisterReferenceValue(
                pb.ReferenceValueRegisterRequest(message=message({"kept": ["yes"]}))
            )
    finally:
        assert first.proc.stop() == 0
    assert f"RVPS listening on {first.address}" in first.proc.log.read_text()
    second = start_rvps(tmp_path, config)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            assert await query(reference_pb2_grpc.ReferenceValueProviderServiceStub(channel), "kept") == ["yes"]
    finally:
        assert second.proc.stop() == 0


def run_rvps_expecting_failure(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [script("rvps"), "-c", str(config), "-a", "127.0.0.1:1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    return result


def test_unknown_config_key_fails_start(tmp_path: Path) -> None:
    result = run_rvps_expecting_failure(write_config(tmp_path, extra="refrence_values_path = 'x.json'"))
    assert "refrence_values_path" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_storage_key_fails_start(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "bogus_option = 1\n")
    result = run_rvps_expecting_failure(config)
    assert "bogus_option" in result.stderr


def test_bad_values_file_entry_fails_start(tmp_path: Path) -> None:
    values = [{"name": "ok", "value": 1}, {"name": "ok2", "value": 2, "expiration": "soon"}]
    result = run_rvps_expecting_failure(write_config(tmp_path, values=values))
    assert "values.json" in result.stderr
    assert "entry 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_values_file_fails_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=f'reference_values_path = "{tmp_path / "absent.json"}"')
    result = run_rvps_expecting_failure(config)
    assert "absent.json" in result.stderr
