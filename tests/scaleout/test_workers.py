"""A KBS and an AS with `--workers 2` each (embedded SQLite storage), real processes on loopback.

Each request below goes over a connection of its own, so the kernel
(SO_REUSEPORT) spreads them over both KBS workers; every test checks, from
the per-process metric files of prometheus_client's multiprocess mode, that
both workers served some. Across workers: a nonce is used once, a policy
change or a resource deletion applies at every worker on the next request,
`/metrics` reports the totals of both, and an attestation policy set through
one AS worker is used by every AS worker within the appraisal-cache bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict

from bench.client import ALLOW_ALL, DENY_ALL, admin, sample_client, sample_evidence
from bench.cluster import Cluster, Service
from guest.kbs_protocol import KbsClient
from tests.scaleout.helpers import claims
from trustee_common.canonical import HashAlgorithm
from trustee_common.errors import PolicyDenyError, ResourceNotFoundError
from trustee_common.jose import TeeKeyPair
from trustee_common.messages import Challenge

pytestmark = pytest.mark.e2e

WORKERS = 2
#: Requests per check: enough connections that both workers get some (all on one: 2^-23).
FANOUT = 24
RESOURCE = "default/workers/key"
AUTH_REQUEST = {"version": "0.4.0", "tee": "sample", "extra-params": {"supported-hash-algorithms": ["sha384"]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("workers"), workers=WORKERS) as running:
        yield running


def workers_of(service: Service) -> list[psutil.Process]:
    assert service.popen is not None
    return psutil.Process(service.popen.pid).children()


def served_by_worker(service: Service, metric: str) -> dict[int, float]:
    """`metric` (a counter) of each live worker, from its multiprocess file."""
    found: dict[int, float] = {}
    for worker in workers_of(service):
        directory = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"])
        path = directory / f"counter_{worker.pid}.db"
        total = 0.0
        if path.exists():
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
                if json.loads(key)[0] == metric:
                    total += value
        found[worker.pid] = total
    return found


def grew_everywhere(before: dict[int, float], after: dict[int, float]) -> bool:
    return len(after) == WORKERS and all(after[pid] > before.get(pid, 0.0) for pid in after)


async def fresh_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:  # a new connection each time
        return response.status, await response.text()


async def fresh_post(url: str, body: Any, cookie: str | None = None) -> tuple[int, Any]:
    headers = {"Cookie": f"kbs-session-id={cookie}"} if cookie else {}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_both_workers_listen(cluster: Cluster) -> None:
    for service in (cluster.kbs[0], cluster.attestation[0]):
        port = service.port
        for worker in workers_of(service):
            listening = {c.laddr.port for c in worker.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
            assert port in listening, f"{service.name} worker {worker.pid} does not listen on {port}"
        assert len(workers_of(service)) == WORKERS


async def test_a_nonce_is_used_once_across_workers(cluster: Cluster) -> None:
    url = cluster.kbs_urls[0]
    before = served_by_worker(cluster.kbs[0], "kbs_attestation_requests")
    async with aiohttp.ClientSession() as http, http.post(f"{url}/kbs/v0/auth", json=AUTH_REQUEST) as response:
        assert response.status == 200
        cookie, challenge = response.cookies["kbs-session-id"].value, Challenge.from_json(await response.json())
    key = TeeKeyPair.generate().public_jwk()
    params = challenge.extra_params if isinstance(challenge.extra_params, dict) else {}
    algorithm = HashAlgorithm.parse(str(params.get("selected-hash-algorithm", "")))
    body = {"runtime-data": {"nonce": challenge.nonce, "tee-pubkey": key},
            "tee-evidence": sample_evidence().composite(challenge.nonce, key, algorithm)}
    results = await asyncio.gather(*(fresh_post(f"{url}/kbs/v0/attest", body, cookie) for _ in range(FANOUT)))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 1, results
    assert all(status == 401 for status in statuses if status != 200), results
    assert grew_everywhere(before, served_by_worker(cluster.kbs[0], "kbs_attestation_requests"))


async def fetch_everywhere(url: str, guest: KbsClient) -> list[bytes | BaseException]:
    async def fetch() -> bytes:
        async with KbsClient(url, token=guest.token, key_pair=guest.key_pair) as passport:
            return await passport.get_resource(f"resource/{RESOURCE}")

    return await asyncio.gather(*(fetch() for _ in range(FANOUT)), return_exceptions=True)


async def test_policy_change_and_delete_apply_at_every_worker_at_once(cluster: Cluster) -> None:
    url = cluster.kbs_urls[0]
    async with admin(url, cluster.admin_token) as client:
        await client.set_resource(RESOURCE, b"worker secret")
        await client.set_resource_policy(ALLOW_ALL)
    async with sample_client(url) as guest:
        await guest.attest()
        before = served_by_worker(cluster.kbs[0], "kbs_policy_evaluations")
        assert await fetch_everywhere(url, guest) == [b"worker secret"] * FANOUT
        assert grew_everywhere(before, served_by_worker(cluster.kbs[0], "kbs_policy_evaluations"))
        async with admin(url, cluster.admin_token) as client:
            await client.set_resource_policy(DENY_ALL)
        outcomes = await fetch_everywhere(url, guest)
        assert all(isinstance(o, PolicyDenyError) for o in outcomes), outcomes
        async with admin(url, cluster.admin_token) as client:
            await client.set_resource_policy(ALLOW_ALL)
            await client.delete_resource(RESOURCE)
        outcomes = await fetch_everywhere(url, guest)
        assert all(isinstance(o, ResourceNotFoundError) for o in outcomes), outcomes


def metric_value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    raise AssertionError(f"{sample} not in /metrics:\n{text}")


async def test_metrics_report_the_totals_of_all_workers(cluster: Cluster) -> None:
    url = cluster.kbs_urls[0]
    status, text = await fresh_get(f"{url}/metrics")
    assert status == 200
    start = metric_value(text, "kbs_auth_requests_total")
    before = served_by_worker(cluster.kbs[0], "kbs_auth_requests")
    results = await asyncio.gather(*(fresh_post(f"{url}/kbs/v0/auth", AUTH_REQUEST) for _ in range(FANOUT)))
    assert all(status == 200 for status, _ in results)
    assert grew_everywhere(before, served_by_worker(cluster.kbs[0], "kbs_auth_requests"))
    scrapes = await asyncio.gather(*(fresh_get(f"{url}/metrics") for _ in range(8)))
    for status, text in scrapes:
        assert status == 200
        assert metric_value(text, "kbs_auth_requests_total") == start + FANOUT
        assert metric_value(text, 'kbs_build_info{implementation="pytrustee",version="0.1.0"}') == 1.0
        assert metric_value(text, "kbs_http_requests_in_flight") == 0.0


async def test_an_attestation_policy_change_reaches_every_as_worker(cluster: Cluster) -> None:
    """Set through one AS worker; within `appraisal_cache_ttl_seconds` (1 s, polled up to 10 s on a loaded machine)
    every attestation, whichever KBS and AS worker serves it, uses it."""
    url = cluster.kbs_urls[0]

    async def vector() -> tuple[int, int, int]:
        async with sample_client(url) as guest:
            found = claims(await guest.attest())["submods"]["cpu0"]["ear.trustworthiness-vector"]
        return found["executables"], found["hardware"], found["configuration"]

    marker = 'package policy\nimport rego.v1\ntrust_claims := {"executables": 3, "hardware": 2, "configuration": 2}\n'
    async with admin(url, cluster.admin_token) as client:
        await client.set_attestation_policy(marker, "rego", "default_cpu")
    deadline = time.monotonic() + 10.0
    while True:
        vectors = await asyncio.gather(*(vector() for _ in range(FANOUT)))
        if all(v == (3, 2, 2) for v in vectors) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert all(v == (3, 2, 2) for v in vectors), vectors
