"""Size caps of a real `rvps`: one value and all live values, refused by name; List by names.

The caps keep every `ListReferenceValues` reply inside one gRPC message
(rvps/core/limits.py). Small caps here (1,000 and 4,000 bytes); the
default ones (1 MiB, 4 MiB) are exercised through the whole stack in
tests/kbs/test_reference_value_limits.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from rvps.core.limits import MAX_TOTAL_CEILING, RECORD_OVERHEAD_BYTES
from tests.rvps.conftest import RvpsProcess, start_rvps, write_config
from tests.rvps.test_rvps import listed, message, query, run_rvps_expecting_failure
from trustee_common.serving import MAX_MESSAGE_BYTES
from trustee_pb import reference_pb2 as pb
from trustee_pb import reference_pb2_grpc

Stub = Any
MAX_VALUE = 1000
MAX_TOTAL = 4000


def filler(name: str, record_bytes: int) -> dict[str, str]:
    """A string value whose record counts `record_bytes` toward the total."""
    return {name: "x" * (record_bytes - len(name) - RECORD_OVERHEAD_BYTES - 2)}


@pytest.fixture(scope="module")
def small_rvps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RvpsProcess]:
    directory = tmp_path_factory.mktemp("rvps-limits")
    started = start_rvps(directory, write_config(directory, extra=f"max_value_bytes = {MAX_VALUE}\nmax_total_bytes = {MAX_TOTAL}"))
    yield started
    assert started.proc.stop() == 0, started.proc.output()


@pytest.fixture
async def stub(small_rvps: RvpsProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(small_rvps.address) as channel:
        opened = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        yield opened
        for name in await listed(opened):
            await opened.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id=name))


async def register(stub: Stub, values: dict[str, Any]) -> None:
    await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=message(values)))


async def refused(stub: Stub, values: dict[str, Any]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register(stub, values)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(caught.value.trailing_metadata() or ())["trustee-error-variant"] == "RvpsError"
    return caught.value.details() or ""


async def test_one_value_over_the_cap_is_refused_and_nothing_is_stored(stub: Stub) -> None:
    await register(stub, {"at_cap": "x" * (MAX_VALUE - 2)})  # JSON text with quotes: exactly the cap
    detail = await refused(stub, {"small": 1, "too_big": "x" * (MAX_VALUE - 1)})
    assert "'too_big'" in detail and f"{MAX_VALUE + 1} bytes" in detail and "max_value_bytes" in detail
    assert await query(stub, "small") == "<absent>"
    assert await query(stub, "at_cap") == "x" * (MAX_VALUE - 2)


async def test_total_cap_counts_live_values_after_the_upsert(stub: Stub) -> None:
    await register(stub, {**filler("fill_a", 1000), **filler("fill_b", 1000), **filler("fill_c", 1000)})
    await register(stub, filler("fill_d", 999))  # 3,999 of 4,000 bytes
    detail = await refused(stub, filler("fill_e", 100))
    assert f"cap of {MAX_TOTAL} bytes (max_total_bytes)" in detail and "would total 4099 bytes" in detail
    assert await query(stub, "fill_e") == "<absent>"
    await register(stub, filler("fill_a", 1001))  # replacing a value counts only the new one: 4,000
    await stub.DeleteReferenceValue(pb.ReferenceValueDeleteRequest(reference_value_id="fill_b"))
    await register(stub, filler("fill_e", 1000))  # room again after the delete
    assert sorted(await listed(stub)) == ["fill_a", "fill_c", "fill_d", "fill_e"]


async def test_list_by_names_returns_only_those(stub: Stub) -> None:
    await register(stub, {"one": 1, "two": 2, "three": 3})
    reply = await stub.ListReferenceValues(pb.ReferenceValueListRequest(names=["two", "three", "absent", "../bad"]))
    assert sorted(r.name for r in reply.reference_values) == ["three", "two"]
    assert sorted(await listed(stub)) == ["one", "three", "two"]


def test_caps_stay_inside_the_grpc_message_limit() -> None:
    assert MAX_TOTAL_CEILING + (1 << 20) <= MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (f"max_total_bytes = {MAX_TOTAL_CEILING + 1}", f"max_total_bytes must be at most {MAX_TOTAL_CEILING}"),
        ("max_total_bytes = 100\nmax_value_bytes = 101", "max_value_bytes (101) must not exceed max_total_bytes (100)"),
        ("max_total_bytes = 0", "max_total_bytes must be >= 1"),
    ],
)
def test_bad_caps_fail_start(tmp_path: Path, extra: str, expected: str) -> None:
    result = run_rvps_expecting_failure(write_config(tmp_path, extra=extra))
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_startup_values_over_the_cap_fail_start_naming_the_file(tmp_path: Path) -> None:
    values: list[dict[str, object]] = [{"name": "big", "value": "x" * 200}]
    result = run_rvps_expecting_failure(write_config(tmp_path, values=values, extra="max_total_bytes = 100"))
    assert "values.json" in result.stderr and "max_value_bytes" in result.stderr
    assert "Traceback" not in result.stderr
