"""Request ids across real KBS, AS and RVPS processes, and the metrics endpoints of all three."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.kbs.helpers import kbs_toml, run_kbs_expect_exit
from tests.observability.conftest import Stack
from tests.observability.test_audit import admin, attested_session, cookie_jar
from tests.procs import Proc, free_port
from trustee_pb import reference_pb2, reference_pb2_grpc


def sample_message(values: dict[str, Any]) -> dict[str, str]:
    return {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(json.dumps(values).encode()).decode()}


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    lines = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_request_id_travels_from_the_kbs_to_the_as_and_the_rvps(stack: Stack) -> None:
    async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
        rid = await attested_session(stack.kbs, http, request_id="trace-me.42")
    assert rid == "trace-me.42"
    as_lines = [line for line in json_lines(stack.as_proc) if line.get("request_id") == rid]
    rvps_lines = [line for line in json_lines(stack.rvps) if line.get("request_id") == rid]
    assert any("AttestationEvaluate" in line["message"] for line in as_lines), as_lines
    assert rvps_lines and all(line["service"] == "rvps" for line in rvps_lines)
    assert {"ts", "level", "logger", "message"} <= set(rvps_lines[0])
    kbs_lines = json_lines(stack.kbs.proc)
    assert kbs_lines and all("message" in line for line in kbs_lines)  # `[logging] format = "json"` applies to the KBS


async def test_admin_requests_to_the_rvps_carry_the_request_id_too(stack: Stack) -> None:
    message = sample_message({"traced": ["1"]})
    status, rid = await admin(stack.kbs, stack.material, "POST", "reference-value", json=message)
    assert status == 200
    rvps = [line for line in json_lines(stack.rvps) if line.get("request_id") == rid]
    assert any("registered reference values" in line["message"] for line in rvps), rvps


async def test_malformed_or_oversized_incoming_ids_are_replaced(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for bad in ("x" * 65, "bad id", "evil\u00e9", ""):
            async with http.get(stack.kbs.url + "/healthz", headers={"X-Request-Id": bad}) as response:
                assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"]), bad
        async with http.get(stack.kbs.api("nothing-here")) as response:
            assert response.status == 404 and re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


async def test_as_and_rvps_metrics_count_attestations(stack: Stack) -> None:
    async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
        await attested_session(stack.kbs, http)
    status, as_text = await fetch(f"http://127.0.0.1:{stack.as_metrics_port}/metrics")
    assert status == 200
    assert sum(sample_value(as_text, "as_attestation_evaluations_total", tee="sample", result=r)
               for r in ("affirming", "warning", "contraindicated", "none")) >= 1
    assert sample_value(as_text, "as_attestation_evaluation_duration_seconds_count", tee="sample") >= 1
    assert sample_value(as_text, "as_grpc_requests_total", method="AttestationEvaluate", code="OK") >= 1
    status, rvps_text = await fetch(f"http://127.0.0.1:{stack.rvps_metrics_port}/metrics")
    assert status == 200
    calls = sum(sample_value(rvps_text, "rvps_grpc_requests_total", method=m, code="OK")
                for m in ("QueryReferenceValue", "ListReferenceValues"))
    assert calls >= 1
    assert (await fetch(f"http://127.0.0.1:{stack.rvps_metrics_port}/other"))[0] == 404


async def test_rvps_metrics_count_registrations_and_queries(stack: Stack) -> None:
    message = sample_message({"counted": ["1"]})
    assert (await admin(stack.kbs, stack.material, "POST", "reference-value", json=message))[0] == 200
    assert (await admin(stack.kbs, stack.material, "GET", "reference-value/counted"))[0] == 200
    assert (await admin(stack.kbs, stack.material, "GET", "reference-value/never-registered"))[0] == 404
    _, text = await fetch(f"http://127.0.0.1:{stack.rvps_metrics_port}/metrics")
    assert sample_value(text, "rvps_registrations_total", result="ok") >= 1
    assert sample_value(text, "rvps_queries_total", result="found") >= 1
    assert sample_value(text, "rvps_queries_total", result="absent") >= 1


async def test_kbs_metrics_only_on_their_own_address(stack: Stack) -> None:
    status, _ = await fetch(stack.kbs.url + "/metrics")
    assert status == 404
    status, text = await fetch(f"http://127.0.0.1:{stack.kbs_metrics_port}/metrics")
    assert status == 200 and "kbs_http_requests_total" in text
    assert (await fetch(f"http://127.0.0.1:{stack.kbs_metrics_port}/kbs/v0/auth"))[0] == 404


async def test_failed_calls_are_counted_by_status_code_and_get_their_own_request_id(stack: Stack) -> None:
    address = stack.rvps.args[stack.rvps.args.index("--address") + 1]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.QueryReferenceValue(reference_pb2.ReferenceValueQueryRequest(reference_value_id="bad\x01name"),
                                           metadata=(("x-request-id", "bad id with spaces"),))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, text = await fetch(f"http://127.0.0.1:{stack.rvps_metrics_port}/metrics")
    assert sample_value(text, "rvps_grpc_requests_total", method="QueryReferenceValue", code="INVALID_ARGUMENT") >= 1
    assert sample_value(text, "rvps_queries_total", result="MalformedRequest") >= 1
    failures = [line for line in json_lines(stack.rvps) if "rpc QueryReferenceValue -> INVALID_ARGUMENT" in line["message"]]
    assert failures and all(re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) for line in failures)


def test_a_taken_metrics_address_stops_the_kbs_naming_the_key(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    text = kbs_toml(port, stack.material, tmp_path / "repo", as_port=free_port())
    code, output = run_kbs_expect_exit(tmp_path, text + f'\n[metrics]\naddress = "127.0.0.1:{stack.kbs_metrics_port}"\n')
    assert code == 2, output
    assert f"metrics.address: KBS cannot listen on 127.0.0.1:{stack.kbs_metrics_port}" in output
