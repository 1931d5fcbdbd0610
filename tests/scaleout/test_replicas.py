"""Two KBS and two AS replicas and one RVPS, real processes on loopback, sharing one PostgreSQL database.

Sessions, the resource policy, attestation policies, resources and reference
values live in the database, so any replica serves any step: `/auth` on one
KBS and `/attest` on the other, a token from one AS accepted by a KBS that
talks to the other (both AS sign with the same key and chain), a policy or a
resource written through one replica used at once by the other. Expired
sessions are purged from the shared table. The last test repeats the
session part with the KBS sessions in Redis (`session_storage_type`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.client import ALLOW_ALL, DENY_ALL, SplitKbsClient, admin, sample_client
from bench.cluster import Cluster
from guest.kbs_protocol import KbsClient
from tests.scaleout.helpers import claims, count_rows, wait_until
from tests.storage.servers import PostgresServer, RedisServer
from trustee_common.b64 import url_decode
from trustee_common.errors import PolicyDenyError, ResourceNotFoundError

pytestmark = pytest.mark.e2e

#: Session lifetime of these KBSs: 3 s (the purger then runs every 3 s).
SESSION_MINUTES = 0.05
PURGE_WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def cluster(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = postgres_server.new_database()
    with Cluster(tmp_path_factory.mktemp("replicas"), storage_url=url, kbs_replicas=2, as_replicas=2,
                 session_timeout_minutes=SESSION_MINUTES) as running:
        yield running


def url_of(cluster: Cluster) -> str:
    assert cluster.storage_url is not None
    return cluster.storage_url


async def set_policy(url: str, token: str, policy: str) -> None:
    async with admin(url, token) as client:
        await client.set_resource_policy(policy)


async def test_auth_on_one_kbs_and_attest_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.kbs_urls
    await set_policy(a, cluster.admin_token, ALLOW_ALL)
    async with admin(a, cluster.admin_token) as client:
        await client.set_resource("default/split/key", b"split secret")
    for auth_url, url in ((a, b), (b, a)):
        async with SplitKbsClient(auth_url, url) as client:
            token = await client.attest()
            assert await client.get_resource("resource/default/split/key") == b"split secret"
        assert claims(token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"]["svn"] == "1"


async def test_a_token_from_one_as_is_accepted_by_a_kbs_using_the_other(cluster: Cluster) -> None:
    a, b = cluster.kbs_urls  # KBS 0 talks to AS 0, KBS 1 to AS 1
    await set_policy(a, cluster.admin_token, ALLOW_ALL)
    async with admin(a, cluster.admin_token) as client:
        await client.set_resource("default/passport/key", b"passport secret")
    async with sample_client(a) as attester:
        token = await attester.attest()
    async with KbsClient(b, token=token, key_pair=attester.key_pair) as passport:
        assert await passport.get_resource("resource/default/passport/key") == b"passport secret"


async def test_a_resource_policy_set_on_one_kbs_applies_at_the_other_at_once(cluster: Cluster) -> None:
    a, b = cluster.kbs_urls
    async with admin(a, cluster.admin_token) as client:
        await client.set_resource("default/policy/key", b"guarded")
    async with sample_client(b) as guest:
        await guest.attest()
        for writer, policy, allowed in ((a, DENY_ALL, False), (a, ALLOW_ALL, True), (b, DENY_ALL, False), (b, ALLOW_ALL, True)):
            await set_policy(writer, cluster.admin_token, policy)
            for reader in (a, b):
                async with admin(reader, cluster.admin_token) as client:
                    assert await client.get_resource_policy() == policy
            if allowed:
                assert await guest.get_resource("resource/default/policy/key") == b"guarded"
            else:
                with pytest.raises(PolicyDenyError):
                    await guest.get_resource("resource/default/policy/key")


async def test_an_attestation_policy_set_through_one_as_applies_at_the_other(cluster: Cluster) -> None:
    """Each KBS has its AS appraise CPU evidence with policy default_cpu; the other AS sees a change within its
    `appraisal_cache_ttl_seconds` (default 1 s: it re-reads the appraisal epoch at most that often).

    (This replaces default_cpu in this module's database; the other tests here release with allow-all and do not
    depend on the trust vector.)
    """
    async def vector_via(url: str) -> tuple[int, int, int]:
        async with sample_client(url) as guest:
            vector = claims(await guest.attest())["submods"]["cpu0"]["ear.trustworthiness-vector"]
        return vector["executables"], vector["hardware"], vector["configuration"]

    a, b = cluster.kbs_urls
    for writer, reader, claim in ((a, b, 3), (b, a, 4)):  # through KBS 0 -> AS 0, used by KBS 1 -> AS 1; and back
        marker = f'package policy\nimport rego.v1\ntrust_claims := {{"executables": {claim}, "hardware": 2, "configuration": 2}}\n'
        async with admin(writer, cluster.admin_token) as client:
            await client.set_attestation_policy(marker, "rego", "default_cpu")
        deadline = time.monotonic() + 10.0  # the 1 s cache bound, with room for a loaded machine
        for _ in range(100):
            vector = await vector_via(reader)
            if vector == (claim, 2, 2) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        assert vector == (claim, 2, 2)


async def test_a_resource_written_through_one_kbs_is_served_by_the_other(cluster: Cluster) -> None:
    a, b = cluster.kbs_urls
    await set_policy(a, cluster.admin_token, ALLOW_ALL)
    async with admin(a, cluster.admin_token) as client:
        await client.set_resource("default/shared/one", b"written via A")
    async with admin(b, cluster.admin_token) as client:
        await client.set_resource("default/shared/two", b"written via B")
    for url in (a, b):
        async with sample_client(url) as guest:
            assert await guest.get_resource("resource/default/shared/one") == b"written via A"
            assert await guest.get_resource("resource/default/shared/two") == b"written via B"
    async with admin(b, cluster.admin_token) as client:
        await client.delete_resource("default/shared/one")
    async with sample_client(a) as guest:
        with pytest.raises(ResourceNotFoundError):
            await guest.get_resource("resource/default/shared/one")


async def test_expired_sessions_are_purged_from_the_shared_table(cluster: Cluster) -> None:
    async def auth_only(url: str) -> None:
        async with sample_client(url) as client:
            await client._post_json("auth", {"version": "0.4.0", "tee": "sample", "extra-params": {}})

    url = url_of(cluster)
    await asyncio.gather(*(auth_only(cluster.kbs_urls[i % 2]) for i in range(40)))
    assert count_rows(url, "kbs_protocol_session") >= 40
    assert await asyncio.to_thread(wait_until, lambda: count_rows(url, "kbs_protocol_session") == 0, PURGE_WAIT_SECONDS)


async def test_redis_sessions_shared_by_two_kbs(postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.flush()
    url = postgres_server.new_database()
    with Cluster(tmp_path, storage_url=url, kbs_replicas=2, as_replicas=1, redis_url=redis_server.url,
                 session_timeout_minutes=SESSION_MINUTES) as running:
        a, b = running.kbs_urls
        await set_policy(a, running.admin_token, ALLOW_ALL)
        async with admin(b, running.admin_token) as client:
            await client.set_resource("default/redis/key", b"via redis sessions")
        with redis.Redis.from_url(redis_server.url) as client:
            for auth_url, kbs_url in ((a, b), (b, a)):
                async with SplitKbsClient(auth_url, kbs_url) as guest:
                    await guest.attest()
                    assert client.keys("kbs_protocol_session:*")
                    assert await guest.get_resource("resource/default/redis/key") == b"via redis sessions"
            assert count_rows(url, "kbs_protocol_session") == 0  # nothing in PostgreSQL
            # Redis expires them itself.
            assert await asyncio.to_thread(wait_until, lambda: not client.keys("kbs_protocol_session:*"), PURGE_WAIT_SECONDS)


async def test_as_replicas_with_their_own_keys_under_one_ca(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """The alternative to one shared signing key: a key per AS replica, each certified by the CA every KBS trusts."""
    with Cluster(tmp_path, storage_url=postgres_server.new_database(), kbs_replicas=2, as_replicas=2, signer_per_as=True) as running:
        a, b = running.kbs_urls
        await set_policy(a, running.admin_token, ALLOW_ALL)
        async with admin(a, running.admin_token) as client:
            await client.set_resource("default/own-keys/key", b"own keys")
        signers = set()
        for issuer, verifier in ((a, b), (b, a)):
            async with sample_client(issuer) as attester:
                token = await attester.attest()
            signers.add(json.dumps(json.loads(url_decode(token.split(".")[0], "header"))["jwk"], sort_keys=True))
            async with KbsClient(verifier, token=token, key_pair=attester.key_pair) as passport:
                assert await passport.get_resource("resource/default/own-keys/key") == b"own keys"
        assert len(signers) == 2
