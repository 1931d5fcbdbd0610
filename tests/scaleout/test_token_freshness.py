"""Token freshness (docs/token-freshness.md): a cached token stops working soon after the policy changes.

Real processes on loopback: one RVPS, two AS replicas and two KBS replicas
(KBS i talks to AS i), sharing SQLite files per service or one PostgreSQL
database. The attestation
policy `default_cpu` affirms the sample TEE only while the reference value
`freshness_svn` lists its svn, and the resource policy releases only to
affirming tokens. After a guest obtained a resource, the operator tightens
the appraisal through each route (the KBS admin API on the other KBS, the
AS gRPC API on the other AS, rvps-tool at the RVPS); then the same session
cookie and the same Bearer token are refused with `StaleAttestation` at
both KBSs within the documented bound, and attesting again is denied.
Before the fix, both kept working until the token's `exp` (5 minutes).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from kbs_client.policies import AFFIRMING

from bench.client import admin, sample_evidence
from bench.cluster import Cluster
from guest.kbs_protocol import KbsClient
from tests.scaleout.helpers import claims
from trustee_common.b64 import std_encode, url_encode
from trustee_common.epoch import CLAIM
from trustee_common.errors import ERROR_TYPE_PREFIX, PolicyDenyError, StaleAttestationError, TrusteeError
from trustee_pb import attestation_pb2, attestation_pb2_grpc

pytestmark = pytest.mark.e2e

RESOURCE = "resource/default/fresh/key"
SECRET = b"released only to affirming guests"
REFERENCE_VALUE = "freshness_svn"
ALLOWING = f"""package policy
import rego.v1

default executables := 97

executables := 2 if {{
    input.sample.svn in query_reference_value("{REFERENCE_VALUE}")
}}

trust_claims := {{"executables": executables}}
"""
DENYING = 'package policy\nimport rego.v1\n\ntrust_claims := {"executables": 97}\n'
#: The documented bound is `appraisal_epoch_ttl_seconds` (1 s) plus one AS round trip;
#: this is generous for a loaded 2-core machine and still far below the token's 5 minutes.
BOUND_SECONDS = 20.0
STALE_TYPE = ERROR_TYPE_PREFIX + StaleAttestationError.variant


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Replicas sharing SQLite files (one per service), then all sharing one PostgreSQL database."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_server").new_database()
    with Cluster(tmp_path_factory.mktemp("freshness"), storage_url=url, kbs_replicas=2, as_replicas=2) as running:
        asyncio.run(_install(running))
        yield running


async def _install(cluster: Cluster) -> None:
    async with admin(cluster.kbs_urls[0], cluster.admin_token) as client:
        await client.set_resource_policy(AFFIRMING)
        await client.set_resource(RESOURCE.removeprefix("resource/"), SECRET)


@pytest.fixture(autouse=True)
def allowing(cluster: Cluster) -> None:
    """Each test starts from the affirming policy and a registered reference value."""

    async def restore() -> None:
        async with admin(cluster.kbs_urls[0], cluster.admin_token) as client:
            await client.set_attestation_policy(ALLOWING, "rego", "default_cpu")
            await client.register_sample_reference_value(REFERENCE_VALUE, ["1"])

    asyncio.run(restore())


class Guest(KbsClient):
    """The real guest client, plus one resource request with the session cookie and no re-attestation."""

    def __init__(self, url: str) -> None:
        super().__init__(url, evidence=sample_evidence())

    async def fetch_once(self) -> tuple[int, str]:
        async with self._session.get(f"{self.base}/{RESOURCE}", ssl=self._ssl) as response:
            return response.status, await response.text()


async def bearer_once(url: str, token: str) -> tuple[int, str]:
    """One passport-mode request: `Authorization: Bearer <token>`."""
    async with aiohttp.ClientSession() as session, session.get(
        f"{url}/kbs/v0/{RESOURCE}", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, await response.text()


def is_stale(reply: tuple[int, str]) -> bool:
    status, text = reply
    if status != 401:
        return False
    assert json.loads(text)["type"] == STALE_TYPE, text
    return True


async def refused_within_bound(request: Callable[[], Awaitable[tuple[int, str]]], until_then: int = 200) -> float:
    """Poll until `request` gets 401 StaleAttestation; until then it gets `until_then`. Seconds taken."""
    start = time.monotonic()
    while True:
        reply = await request()
        if is_stale(reply):
            return time.monotonic() - start
        assert reply[0] == until_then, reply
        assert time.monotonic() - start < BOUND_SECONDS, "the old token is still accepted"
        await asyncio.sleep(0.1)


async def attested_guest(cluster: Cluster) -> tuple[Guest, str]:
    """A guest attested at KBS 0 (AS 0) whose token works by cookie at KBS 0 and as Bearer at KBS 1."""
    guest = Guest(cluster.kbs_urls[0])
    token = await guest.attest()
    assert isinstance(claims(token)[CLAIM], str)
    assert (await guest.fetch_once())[0] == 200
    assert (await bearer_once(cluster.kbs_urls[1], token))[0] == 200
    return guest, token


async def assert_refused_everywhere(cluster: Cluster, guest: Guest, token: str) -> None:
    await refused_within_bound(guest.fetch_once)
    await refused_within_bound(lambda: bearer_once(cluster.kbs_urls[1], token))
    await refused_within_bound(lambda: bearer_once(cluster.kbs_urls[0], token))


def as_stub(cluster: Cluster, index: int) -> tuple[grpc.aio.Channel, attestation_pb2_grpc.AttestationServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{cluster.as_ports[index]}")
    return channel, attestation_pb2_grpc.AttestationServiceStub(channel)


def rvps_tool(cluster: Cluster, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "rvps-tool"), *args, "--addr", f"127.0.0.1:{cluster.rvps_port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def test_policy_tightened_through_the_kbs_admin_api_refuses_the_cached_token(cluster: Cluster) -> None:
    guest, token = await attested_guest(cluster)
    async with guest:
        async with admin(cluster.kbs_urls[1], cluster.admin_token) as client:  # the other KBS, hence the other AS
            await client.set_attestation_policy(DENYING, "rego", "default_cpu")
        await assert_refused_everywhere(cluster, guest, token)
        with pytest.raises(PolicyDenyError):
            await guest.get_resource(RESOURCE)  # attests again: contraindicated under the new policy
        assert claims(guest.token or "")["submods"]["cpu0"]["ear.status"] == "contraindicated"


async def test_policy_set_or_deleted_at_the_as_directly_refuses_the_cached_token(cluster: Cluster) -> None:
    guest, token = await attested_guest(cluster)
    channel, stub = as_stub(cluster, 1)  # KBS 0 talks to AS 0: the change goes through the other replica
    async with guest, channel:
        await stub.SetAttestationPolicy(attestation_pb2.SetPolicyRequest(policy_id="default_cpu", policy=url_encode(DENYING.encode())))
        await assert_refused_everywhere(cluster, guest, token)
        with pytest.raises(PolicyDenyError):
            await guest.get_resource(RESOURCE)

        await stub.SetAttestationPolicy(attestation_pb2.SetPolicyRequest(policy_id="default_cpu", policy=url_encode(ALLOWING.encode())))
        await refused_within_bound(guest.fetch_once, until_then=403)  # the contraindicated token is stale too
        # A token issued after the change is accepted at once by both KBSs, whatever they had cached.
        fresh = await guest.attest()
        assert (await guest.fetch_once())[0] == 200
        assert (await bearer_once(cluster.kbs_urls[1], fresh))[0] == 200

        await stub.DeletePolicy(attestation_pb2.DeletePolicyRequest(policy_id="default_cpu"))
        await refused_within_bound(guest.fetch_once)
        await refused_within_bound(lambda: bearer_once(cluster.kbs_urls[1], fresh))
        with pytest.raises(TrusteeError):
            await guest.get_resource(RESOURCE)  # no policy: attesting again fails


async def test_reference_value_deleted_with_rvps_tool_refuses_the_cached_token(cluster: Cluster, tmp_path: Path) -> None:
    guest, token = await attested_guest(cluster)
    async with guest:
        await asyncio.to_thread(rvps_tool, cluster, "delete", "-r", REFERENCE_VALUE)
        await assert_refused_everywhere(cluster, guest, token)
        with pytest.raises(PolicyDenyError):
            await guest.get_resource(RESOURCE)  # the revoked value no longer affirms

        message = tmp_path / "message.json"
        payload = std_encode(json.dumps({REFERENCE_VALUE: ["1"]}).encode())
        message.write_text(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
        await asyncio.to_thread(rvps_tool, cluster, "register", "--path", str(message))
        await refused_within_bound(guest.fetch_once, until_then=403)  # registering is a change too
        assert await guest.get_resource(RESOURCE) == SECRET


async def test_an_unchanged_epoch_costs_no_as_call_per_request(cluster: Cluster) -> None:
    """The hot path reuses one reading per `appraisal_epoch_ttl_seconds`, not one AS call per request."""
    guest, _ = await attested_guest(cluster)
    async with guest, aiohttp.ClientSession() as session:
        before = await epoch_fetches(session, cluster.kbs_urls[0])
        start = time.monotonic()
        for _ in range(60):
            assert (await guest.fetch_once())[0] == 200
        elapsed = time.monotonic() - start
        fetched = await epoch_fetches(session, cluster.kbs_urls[0]) - before
    assert fetched <= elapsed / 1.0 + 2, f"{fetched} epoch fetches for 60 requests in {elapsed:.1f} s"


async def epoch_fetches(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("kbs_appraisal_epoch_fetches_total "):
            return float(line.split()[1])
    raise AssertionError("kbs_appraisal_epoch_fetches_total not in /metrics")
