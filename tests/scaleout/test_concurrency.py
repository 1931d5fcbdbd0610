"""Concurrent admin writes and policy changes against real KBS processes (embedded storage, and PostgreSQL with two KBSs).

Many writers racing on one resource leave exactly one of their values,
whole. A resource policy replaced again and again while guests keep fetching
gives every request the old or the new decision: the resource or
`PolicyDeny`, never another error.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.client import ALLOW_ALL, DENY_ALL, admin, sample_client
from bench.cluster import Cluster
from tests.scaleout.helpers import framed, unframe
from tests.storage.servers import PostgresServer
from trustee_common.errors import PolicyDenyError

pytestmark = pytest.mark.e2e

RACERS = 16
ROUNDS = 3
POLICY_FLIPS = 20
READERS = 6
RACED = "default/race/key"
GUARDED = "default/race/guarded"


@pytest.fixture(params=["embedded", "postgres"])
def cluster(request: pytest.FixtureRequest, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    if request.param == "embedded":
        running = Cluster(tmp_path)
    else:
        running = Cluster(tmp_path, storage_url=postgres_server.new_database(), kbs_replicas=2)
    with running:
        yield running


async def test_racing_writers_leave_one_whole_value(cluster: Cluster) -> None:
    urls = itertools.cycle(cluster.kbs_urls)
    async with admin(cluster.kbs_urls[0], cluster.admin_token) as client:
        await client.set_resource_policy(ALLOW_ALL)
    for round_ in range(ROUNDS):
        values = [framed(f"round {round_} writer {i} ".encode() * (1 + 500 * i)) for i in range(RACERS)]

        async def write(url: str, value: bytes) -> None:
            async with admin(url, cluster.admin_token) as client:
                await client.set_resource(RACED, value)

        await asyncio.gather(*(write(next(urls), value) for value in values))
        for url in cluster.kbs_urls:
            async with sample_client(url) as guest:
                served = await guest.get_resource(f"resource/{RACED}")
            unframe(served)
            assert served in values


async def test_policy_flips_during_requests_give_old_or_new_decision(cluster: Cluster) -> None:
    urls = cluster.kbs_urls
    async with admin(urls[0], cluster.admin_token) as client:
        await client.set_resource(GUARDED, b"guarded value")
        await client.set_resource_policy(ALLOW_ALL)
    outcomes: list[str] = []
    done = asyncio.Event()

    async def reader(url: str) -> None:
        async with sample_client(url) as guest:
            await guest.attest()
            while not done.is_set():
                try:
                    assert await guest.get_resource(f"resource/{GUARDED}") == b"guarded value"
                    outcomes.append("allow")
                except PolicyDenyError:
                    outcomes.append("deny")

    async def flipper() -> None:
        try:
            for i in range(POLICY_FLIPS):
                async with admin(urls[i % len(urls)], cluster.admin_token) as client:
                    await client.set_resource_policy(DENY_ALL if i % 2 == 0 else ALLOW_ALL)
                await asyncio.sleep(0.02)
        finally:
            done.set()

    await asyncio.gather(flipper(), *(reader(urls[i % len(urls)]) for i in range(READERS)))
    assert set(outcomes) == {"allow", "deny"}, outcomes[:20]
