"""Acknowledged admin writes survive a `kill -9` of the KBS in the middle of a burst, and a full restart.

A client writes self-checking resources (`helpers.framed`: length, SHA-256,
body) through the admin API from several concurrent writers, recording each
write the KBS acknowledged; the test SIGKILLs the KBS while the writers run,
restarts it, and reads everything back through an attested guest. Every
acknowledged write must be served whole, a write in flight at the kill may be
there (whole) or not, and nothing cut is ever served. Then the whole
deployment is stopped and started again: resources, the resource policy and
reference values are all still there. The same for reference-value
registrations (through the KBS and the AS) when the RVPS is SIGKILLed. Both
with the embedded backend (SQLite and the resource directory) and with
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kbs_client.admin import KbsRefusedError

from bench.client import ALLOW_ALL, admin, sample_client
from bench.cluster import Cluster
from tests.scaleout.helpers import framed, unframe
from tests.storage.servers import PostgresServer
from trustee_common.errors import MalformedRequestError, ReferenceValueNotFoundError, ResourceNotFoundError, TrusteeError

pytestmark = pytest.mark.e2e

WRITERS = 6
KILL_AFTER_ACKS = 40
MAX_WRITES_PER_WRITER = 500
OVERWRITTEN = "default/burst/overwritten"
RECONNECT_ATTEMPTS = 80


@dataclass
class Burst:
    acked: dict[str, bytes] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)
    last_acked_version: int = -1
    versions: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)


async def writer(url: str, token: str, index: int, burst: Burst) -> None:
    rng = random.Random(index)
    async with admin(url, token) as client:
        for n in range(MAX_WRITES_PER_WRITER):
            if index == 0:  # one writer keeps overwriting one key with increasing versions
                burst.versions += 1
                version = burst.versions
                path, value = OVERWRITTEN, framed(f"version {version} ".encode() + rng.randbytes(rng.randint(1, 32_000)))
            else:
                version = -1
                path, value = f"default/burst/w{index}-{n}", framed(rng.randbytes(rng.randint(1, 64_000)))
            burst.attempted.add(path)
            try:
                await client.set_resource(path, value)
            except TrusteeError:
                return  # the KBS is gone
            if version >= 0:
                burst.last_acked_version = max(burst.last_acked_version, version)
            burst.acked[path] = value
            if len(burst.acked) >= KILL_AFTER_ACKS:
                burst.enough.set()


async def killer(cluster: Cluster, burst: Burst) -> None:
    await asyncio.wait_for(burst.enough.wait(), 60)
    await asyncio.to_thread(cluster.kbs[0].kill)


async def check_everything(cluster: Cluster, burst: Burst) -> None:
    url = cluster.kbs_urls[0]
    async with admin(url, cluster.admin_token) as client:
        assert await client.get_resource_policy() == ALLOW_ALL
        assert await client.get_reference_value("durable-rv") == ["kept"]
    async with sample_client(url) as guest:
        await guest.attest()
        for path in sorted(burst.attempted):
            try:
                value = await guest.get_resource(f"resource/{path}")
            except ResourceNotFoundError:
                assert path not in burst.acked, f"acknowledged write {path} lost"
                continue
            body = unframe(value)  # whole, never cut
            if path == OVERWRITTEN:
                version = int(body.split(b" ")[1])
                assert version >= burst.last_acked_version, f"{path}: version {version} older than the acknowledged one"
            else:
                assert path not in burst.acked or value == burst.acked[path]
        for leftover in sorted((cluster.paths.repository / "default" / "burst").glob(".tmp-*")):
            with pytest.raises(MalformedRequestError):  # a temporary file of a cut write is never a resource
                await guest.get_resource(f"resource/default/burst/{leftover.name}")


async def burst_kill_restart(cluster: Cluster) -> None:
    url = cluster.kbs_urls[0]
    async with admin(url, cluster.admin_token) as client:
        await client.set_resource_policy(ALLOW_ALL)
        await client.register_sample_reference_value("durable-rv", ["kept"])
    burst = Burst()
    await asyncio.gather(killer(cluster, burst), *(writer(url, cluster.admin_token, i, burst) for i in range(WRITERS)))
    assert len(burst.acked) >= KILL_AFTER_ACKS
    # Every writer but the overwriting one ends on a write the kill cut off (its own key, never acknowledged).
    assert len(burst.attempted - burst.acked.keys()) == WRITERS - 1
    assert burst.last_acked_version >= 1
    await asyncio.to_thread(cluster.kbs[0].start)
    await check_everything(cluster, burst)
    await asyncio.to_thread(cluster.stop)
    await asyncio.to_thread(cluster.start)
    await check_everything(cluster, burst)


async def test_embedded_storage_survives_kill_9_mid_burst(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        await burst_kill_restart(cluster)


async def test_postgres_storage_survives_kill_9_mid_burst(postgres_server: PostgresServer, tmp_path: Path) -> None:
    with Cluster(tmp_path, storage_url=postgres_server.new_database()) as cluster:
        await burst_kill_restart(cluster)


async def rv_writer(url: str, token: str, index: int, acked: dict[str, list[str]], attempted: set[str], enough: asyncio.Event) -> None:
    async with admin(url, token) as client:
        for n in range(MAX_WRITES_PER_WRITER):
            name = f"burst-rv-{index}-{n}"
            value = [hashlib.sha256(name.encode()).hexdigest()]  # self-checking: the value is the name's digest
            attempted.add(name)
            try:
                await client.register_sample_reference_value(name, value)
            except TrusteeError:
                return
            acked[name] = value
            if len(acked) >= KILL_AFTER_ACKS:
                enough.set()


async def rv_kill_restart(cluster: Cluster) -> None:
    url, token = cluster.kbs_urls[0], cluster.admin_token
    acked: dict[str, list[str]] = {}
    attempted: set[str] = set()
    enough = asyncio.Event()

    async def kill_rvps() -> None:
        await asyncio.wait_for(enough.wait(), 60)
        await asyncio.to_thread(cluster.rvps.kill)

    await asyncio.gather(kill_rvps(), *(rv_writer(url, token, i, acked, attempted, enough) for i in range(WRITERS)))
    assert len(attempted - acked.keys()) == WRITERS
    await asyncio.to_thread(cluster.rvps.start)
    async with admin(url, token) as client:
        # The AS's gRPC channel to the RVPS reconnects within its capped backoff (2 s): until then calls fail
        # with UpstreamUnavailable.
        probe = next(iter(acked))
        for _ in range(RECONNECT_ATTEMPTS):
            try:
                await client.get_reference_value(probe)
                break
            except KbsRefusedError as exc:
                assert exc.kbs_variant == "UpstreamUnavailable", exc
                await asyncio.sleep(0.5)
        for name in sorted(attempted):
            try:
                value = await client.get_reference_value(name)
            except KbsRefusedError as exc:
                assert exc.kbs_variant == ReferenceValueNotFoundError.variant, exc
                assert name not in acked, f"acknowledged registration {name} lost"
                continue
            assert value == [hashlib.sha256(name.encode()).hexdigest()]


async def test_embedded_reference_values_survive_kill_9_of_the_rvps(tmp_path: Path) -> None:
    with Cluster(tmp_path) as cluster:
        await rv_kill_restart(cluster)


async def test_postgres_reference_values_survive_kill_9_of_the_rvps(postgres_server: PostgresServer, tmp_path: Path) -> None:
    with Cluster(tmp_path, storage_url=postgres_server.new_database()) as cluster:
        await rv_kill_restart(cluster)
