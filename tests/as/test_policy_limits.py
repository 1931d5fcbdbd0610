"""Attestation policies under hostile input, against a real `grpc-as` (issue 9, item 4).

* An attestation policy that runs too long fails with UNAVAILABLE /
  `PolicyEngineUnavailable` within the configured bound, while health
  checks and evaluations with other policies are answered.
* Built-ins that reach the environment or the network are refused at
  SetAttestationPolicy, whatever the spelling; a canary variable in the
  AS's environment never reaches a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.procs import Proc, free_port, script
from trustee_common.b64 import url_encode
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc

from .conftest import write_as_config
from .helpers import attestation, rpc_error, sample_request

CANARY = "canary-5e1d0b-do-not-leak"
TIMEOUT = 1.0
SLOW = """package policy
import rego.v1
trust_claims := {"hardware": count([y | y := numbers.range(1, 100000000)[_]])}
"""
ENV_COPIERS = {
    "extensions": 'extensions := [{"name": "leak", "key": 1, "value": opa.runtime().env}]',
    "bracket": 'extensions := [{"name": "leak", "key": 1, "value": opa["runtime"]().env.TRUSTEE_CANARY}]',
    "function": 'f(x) := opa.runtime() if x\nextensions := [{"name": "leak", "key": 1, "value": f(true)}]',
    "with": 'extensions := [{"name": "leak", "key": 1, "value": v}] if { v := time.now_ns() with time.now_ns as opa.runtime }',
    "http": 'extensions := [{"name": "leak", "key": 1, "value": http.send({"method": "get", "url": "http://127.0.0.1:9"})}]',
}


@pytest.fixture(scope="module")
def limited_as(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("as-limits")
    config = write_as_config(directory, f"[policy_engine]\nevaluation_timeout = {TIMEOUT}\nworkers = 2\n")
    port = free_port()
    args = [script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"]
    proc = Proc(args, directory / "as.log", port=port, env={"TRUSTEE_CANARY": CANARY})
    yield f"127.0.0.1:{port}"
    assert proc.stop() == 0


@pytest.fixture
async def stub(limited_as: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(limited_as) as channel:
        yield attestation_pb2_grpc.AttestationServiceStub(channel)


async def set_policy(stub: Any, policy_id: str, text: str) -> None:
    await stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id=policy_id, policy=url_encode(text.encode())))


def payload(token: str) -> str:
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


async def test_overrunning_policy_is_cut_off_and_others_are_served(stub: Any, limited_as: str) -> None:
    await set_policy(stub, "slow_cpu", SLOW)
    started = time.monotonic()
    slow = asyncio.ensure_future(stub.AttestationEvaluate(attestation(sample_request(), policy="slow")))
    await asyncio.sleep(0.3)
    async with grpc.aio.insecure_channel(limited_as) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not slow.done():
            tick = time.monotonic()
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            token = (await stub.AttestationEvaluate(attestation(sample_request()), timeout=10)).attestation_token
            assert json.loads(payload(token))["submods"]["cpu0"]["ear.appraisal-policy-id"] == "default"
            assert time.monotonic() - tick < 10, "the AS stalled while a policy evaluation was running"
            await asyncio.sleep(0.1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await slow
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.UNAVAILABLE, "PolicyEngineUnavailable")
    assert "exceeded" in details
    assert time.monotonic() - started < TIMEOUT + 20


@pytest.mark.parametrize("rule", ENV_COPIERS.values(), ids=ENV_COPIERS.keys())
async def test_policies_copying_the_environment_are_refused(stub: Any, rule: str) -> None:
    text = f'package policy\nimport rego.v1\ntrust_claims := {{"hardware": 2}}\n{rule}\n'
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_policy(stub, "leak_cpu", text)
    code, variant, details = rpc_error(caught.value)
    assert (code, variant) == (grpc.StatusCode.INVALID_ARGUMENT, "PolicyEngineError")
    assert "disabled" in details and CANARY not in details
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.AttestationEvaluate(attestation(sample_request(), policy="leak"))
    assert rpc_error(missing.value)[0] == grpc.StatusCode.NOT_FOUND
    token = (await stub.AttestationEvaluate(attestation(sample_request()))).attestation_token
    assert CANARY not in payload(token)
