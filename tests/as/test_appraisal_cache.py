"""The AS's appraisal cache (`attestation_service.appraisal_cache`), with real processes.

One `rvps` (with `/metrics`, to count the calls it serves) and four
`grpc-as` replicas sharing one SQLite policy store and that RVPS:
`cached` and `peer` with `appraisal_cache_ttl_seconds = 1` (the default),
`uncached` with 0 and `long` with 60. Each test uses its own policy id.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from attestation_service.appraisal_cache import AppraisalCache
from attestation_service.config import AsConfig
from attestation_service.policy_store import PolicyStore

from rvps.service import ReferenceValueService
from tests.procs import Proc, free_port, script
from trustee_common.b64 import url_encode
from trustee_common.epoch import CLAIM
from trustee_common.errors import ConfigError
from trustee_common.pki import ensure_token_signing_material
from trustee_common.storage import StorageConfig, open_kv_store
from trustee_pb import attestation_pb2 as pb
from trustee_pb import attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

from .conftest import sample_message
from .helpers import attestation, sample_request, verify_token

Stub = Any
TTLS = {"cached": 1.0, "peer": 1.0, "uncached": 0.0, "long": 60.0}
#: Generous for a loaded 2-core machine; the documented bound is the TTL plus one epoch read.
BOUND_SECONDS = 20.0
VALUE_CALLS = ("QueryReferenceValue", "ListReferenceValues")


def allowing(name: str, padding: int = 0) -> str:
    """Affirms the sample TEE while the reference value `name` lists its svn; `padding` more names force a List."""
    extra = "".join(f'\npad_{i} := query_reference_value("{name}_pad_{i}")' for i in range(padding))
    return f"""package policy
import rego.v1

default executables := 97

executables := 2 if {{
    input.sample.svn in query_reference_value("{name}")
}}
{extra}
trust_claims := {{"executables": executables}}
"""


DENYING = 'package policy\nimport rego.v1\n\ntrust_claims := {"executables": 97}\n'


@dataclass
class Cluster:
    rvps_port: int
    rvps_metrics_port: int
    as_ports: dict[str, int]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("ascache")
    keys = ensure_token_signing_material(directory / "keys")
    rvps_port, metrics_port = free_port(), free_port()
    rvps_config = directory / "rvps.toml"
    rvps_config.write_text(
        f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "rvps.sqlite3"}"\n'
        f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
    )
    procs = [Proc([script("rvps"), "-c", str(rvps_config), "-a", f"127.0.0.1:{rvps_port}"], directory / "rvps.log", port=rvps_port)]
    ports: dict[str, int] = {}
    try:
        for name, ttl in TTLS.items():
            config = directory / f"{name}.toml"
            config.write_text(
                f"appraisal_cache_ttl_seconds = {ttl}\n"
                f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n'
                f'[rvps_config]\ntype = "GrpcRemote"\naddress = "http://127.0.0.1:{rvps_port}"\n'
                f'[attestation_token_broker.signer]\nkey_path = "{keys.token_key}"\ncert_path = "{keys.token_cert_chain}"\n'
                "[policy_engine]\nworkers = 1\n"
            )
            ports[name] = free_port()
            argv = [script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{ports[name]}"]
            procs.append(Proc(argv, directory / f"{name}.log", port=ports[name]))
        yield Cluster(rvps_port, metrics_port, ports)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
async def stubs(cluster: Cluster) -> AsyncIterator[dict[str, Stub]]:
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for name, port in cluster.as_ports.items()}
    try:
        yield {name: attestation_pb2_grpc.AttestationServiceStub(channel) for name, channel in channels.items()}
    finally:
        for channel in channels.values():
            await channel.close()


@pytest.fixture
async def rvps(cluster: Cluster) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.rvps_port}") as channel:
        yield reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)


async def set_policy(stub: Stub, policy_id: str, text: str) -> None:
    await stub.SetAttestationPolicy(pb.SetPolicyRequest(policy_id=f"{policy_id}_cpu", policy=url_encode(text.encode())))


async def appraise(stub: Stub, policy_id: str) -> tuple[str, str]:
    """(ear.status, appraisal epoch) of one sample attestation under `policy_id`."""
    reply = await stub.AttestationEvaluate(attestation(sample_request(), policy=policy_id))
    claims = verify_token(reply.attestation_token, None)
    return str(claims["submods"]["cpu0"]["ear.status"]), str(claims[CLAIM])


async def becomes(stub: Stub, policy_id: str, status: str) -> float:
    """Seconds until an attestation under `policy_id` gets `status`."""
    start = time.monotonic()
    while (await appraise(stub, policy_id))[0] != status:
        assert time.monotonic() - start < BOUND_SECONDS, f"still not {status} after {BOUND_SECONDS} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def value_calls(cluster: Cluster) -> float:
    """Reference-value reads (Query and List) the RVPS has served."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{cluster.rvps_metrics_port}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("rvps_grpc_requests_total{") and any(f'method="{m}"' in line for m in VALUE_CALLS):
            total += float(line.split()[-1])
    return total


def rvps_tool(cluster: Cluster, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "rvps-tool"), *args, "--addr", f"127.0.0.1:{cluster.rvps_port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def register(rvps: Any, values: dict[str, Any], **extra: str) -> None:
    message = json.loads(sample_message(values).message)
    await rvps.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=json.dumps({**message, **extra})))


async def attest_many(stub: Stub, policy_id: str, count: int) -> tuple[float, set[str]]:
    start = time.monotonic()
    results = await asyncio.gather(*(appraise(stub, policy_id) for _ in range(count)))
    assert {status for status, _ in results} == {"affirming"}
    return time.monotonic() - start, {epoch for _, epoch in results}


async def test_repeated_attestations_do_not_ask_the_rvps_each_time(cluster: Cluster, stubs: dict[str, Stub], rvps: Any) -> None:
    await register(rvps, {"cache_a": ["1"]})
    await set_policy(stubs["cached"], "cachea", allowing("cache_a"))
    await appraise(stubs["cached"], "cachea")  # warm
    before = await value_calls(cluster)
    elapsed, epochs = await attest_many(stubs["cached"], "cachea", 40)
    calls = await value_calls(cluster) - before
    assert len(epochs) == 1
    # One Query per TTL at most (Query replies carry no expiration), not one per attestation.
    assert calls <= elapsed / TTLS["cached"] + 2, f"{calls} RVPS reads for 40 attestations in {elapsed:.1f} s"


async def test_ttl_zero_asks_the_rvps_for_every_attestation(cluster: Cluster, stubs: dict[str, Stub], rvps: Any) -> None:
    await register(rvps, {"cache_d": ["1"]})
    await set_policy(stubs["uncached"], "cachez", allowing("cache_d"))
    before = await value_calls(cluster)
    await attest_many(stubs["uncached"], "cachez", 10)
    assert await value_calls(cluster) - before >= 10


async def test_a_policy_set_here_applies_at_once(stubs: dict[str, Stub], rvps: Any) -> None:
    await register(rvps, {"cache_l": ["1"]})
    await set_policy(stubs["cached"], "cachel", allowing("cache_l"))
    assert (await appraise(stubs["cached"], "cachel"))[0] == "affirming"
    await set_policy(stubs["cached"], "cachel", DENYING)
    assert (await appraise(stubs["cached"], "cachel"))[0] == "contraindicated"


async def test_a_policy_set_on_another_replica_applies_within_the_ttl(stubs: dict[str, Stub], rvps: Any) -> None:
    await register(rvps, {"cache_b": ["1"]})
    await set_policy(stubs["peer"], "cacheb", allowing("cache_b"))
    await becomes(stubs["cached"], "cacheb", "affirming")
    _, old_epoch = await appraise(stubs["cached"], "cacheb")
    await set_policy(stubs["peer"], "cacheb", DENYING)
    await becomes(stubs["cached"], "cacheb", "contraindicated")
    assert (await appraise(stubs["cached"], "cacheb"))[1] != old_epoch


async def test_a_reference_value_deleted_with_rvps_tool_stops_affirming_within_the_ttl(
    cluster: Cluster, stubs: dict[str, Stub], rvps: Any
) -> None:
    await register(rvps, {"cache_c": ["1"]})
    await set_policy(stubs["cached"], "cachec", allowing("cache_c", padding=20))  # a List: the same bound
    await becomes(stubs["cached"], "cachec", "affirming")
    await asyncio.to_thread(rvps_tool, cluster, "delete", "-r", "cache_c")
    await becomes(stubs["cached"], "cachec", "contraindicated")


async def test_an_expired_reference_value_stops_affirming_although_the_epoch_is_unchanged(
    stubs: dict[str, Stub], rvps: Any
) -> None:
    """`long` re-reads the epoch once a minute; the value read with List must still end at its expiration."""
    expiry = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=4)
    await register(rvps, {"cache_e": ["1"]}, expiration=expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
    await set_policy(stubs["long"], "cachee", allowing("cache_e", padding=20))
    status, epoch = await appraise(stubs["long"], "cachee")
    if datetime.datetime.now(datetime.UTC) >= expiry - datetime.timedelta(seconds=1):
        pytest.skip("the machine was too slow to attest before the value expired")
    assert status == "affirming"
    await asyncio.sleep(max(0.0, (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()) + 0.5)
    status, later_epoch = await appraise(stubs["long"], "cachee")
    assert later_epoch == epoch  # the same snapshot: only the expiration made the difference
    assert status == "contraindicated"



async def test_get_appraisal_epoch_drops_a_snapshot_it_finds_stale(stubs: dict[str, Stub], rvps: Any) -> None:
    """A KBS that learned of a change (GetAppraisalEpoch) makes the AS use it at once, even with a 60 s TTL."""
    await register(rvps, {"cache_f": ["1"]})
    await set_policy(stubs["peer"], "cachef", allowing("cache_f"))
    await stubs["long"].GetAppraisalEpoch(pb.GetAppraisalEpochRequest())
    assert (await appraise(stubs["long"], "cachef"))[0] == "affirming"
    await set_policy(stubs["peer"], "cachef", DENYING)
    epoch = (await stubs["long"].GetAppraisalEpoch(pb.GetAppraisalEpochRequest())).epoch
    assert await appraise(stubs["long"], "cachef") == ("contraindicated", epoch)

def test_the_ttl_is_configured_at_the_top_level(tmp_path: Path) -> None:
    config = tmp_path / "as.toml"
    config.write_text("[rvps_config]\n")
    assert AsConfig.load(config).appraisal_cache_ttl_seconds == 1.0
    config.write_text("appraisal_cache_ttl_seconds = 0\n")
    assert AsConfig.load(config).appraisal_cache_ttl_seconds == 0.0
    for bad in ("-1", "61", "true", '"1"'):
        config.write_text(f"appraisal_cache_ttl_seconds = {bad}\n")
        with pytest.raises(ConfigError, match="appraisal_cache_ttl_seconds"):
            AsConfig.load(config)


async def test_a_snapshot_does_not_remember_policies_that_are_not_stored() -> None:
    """Clients choose policy ids: absent ones are read again, so a snapshot cannot be grown by asking for many."""
    store = open_kv_store(StorageConfig(storage_type="Memory"))
    policies = PolicyStore(store)
    await policies.put("kept_cpu", DENYING)
    cache = AppraisalCache(policies, ReferenceValueService(store), 60.0, lambda: datetime.datetime.now(datetime.UTC))
    snapshot = await cache.current()
    for index in range(50):
        assert await cache.policy(snapshot, f"absent{index}_cpu") is None
    assert await cache.policy(snapshot, "kept_cpu") == DENYING
    assert list(snapshot.policies) == ["kept_cpu"]
