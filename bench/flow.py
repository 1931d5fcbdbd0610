"""Full-flow throughput of a deployment, embedded or PostgreSQL, with 1 or 2 replicas: `python -m bench.flow`.

Each flow is what a guest does to get one secret: `/auth`, `/attest` (the
KBS has the AS verify sample-TEE evidence and issue a token) and a resource
GET, with a fresh TEE key and a fresh session: 3 HTTP requests. `--clients`
concurrent clients run `--count` flows in all, spread round-robin over the
KBS replicas. In the same run, against the same processes and with the same
concurrency, it measures the unavoidable work: bare HTTP round trips to the
KBS's `/healthz`, and AS evaluations alone (one gRPC `AttestationEvaluate`
with the same evidence, straight to the AS). Results are rates and ratios
(how many bare round trips and AS evaluations one flow costs), never
pass/fail. With N replicas there are N KBS and N AS processes (KBS i uses AS
i) and one RVPS. PostgreSQL: `--postgres-url` (one database, reused), or
else a private server started with the test suite's launcher
(tests/storage/servers.py; needs Debian's postgresql package).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.client import ALLOW_ALL, admin, sample_client
from bench.cluster import Cluster
from guest.attesters.sample import SampleAttester
from kbs.as_client import GrpcAttestationService
from kbs.core.evidence import POLICY_IDS, EvidenceItem, hash_algorithm_for
from trustee_common.b64 import url_encode
from trustee_common.canonical import HashAlgorithm, primary_runtime_data, runtime_data_digest
from trustee_common.jose import TeeKeyPair

RESOURCE = "default/bench/key"
REQUESTS_PER_FLOW = 3
WARMUP_FLOWS = 4
SCENARIOS = ("embedded:1", "embedded:2", "postgres:1", "postgres:2")


@dataclass(frozen=True)
class Result:
    scenario: str
    storage: str
    replicas: int
    clients: int
    flows: int
    flows_per_s: float
    requests_per_s: float
    healthz_per_s: float
    as_evaluations_per_s: float

    @property
    def round_trips_per_flow(self) -> float:
        """How many bare `/healthz` round trips one flow costs (same concurrency)."""
        return self.healthz_per_s / self.flows_per_s

    @property
    def evaluations_per_flow(self) -> float:
        """How many AS evaluations alone one flow costs (same concurrency)."""
        return self.as_evaluations_per_s / self.flows_per_s


async def timed(clients: int, count: int, make_worker: Callable[[int], Callable[[], Awaitable[None]]]) -> float:
    """Seconds for `count` operations by `clients` concurrent workers; each worker is built once and called per operation."""
    counter = itertools.count()

    async def run(index: int) -> None:
        operation = make_worker(index)
        while next(counter) < count:
            await operation()

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(clients)))
    return time.perf_counter() - start


async def flows(urls: list[str], clients: int, count: int) -> float:
    spread = itertools.cycle(urls)

    def worker(_: int) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            async with sample_client(next(spread)) as guest:
                await guest.get_resource(f"resource/{RESOURCE}")
        return one

    return await timed(clients, count, worker)


async def healthz(urls: list[str], clients: int, count: int) -> float:
    spread = itertools.cycle(urls)
    async with aiohttp.ClientSession() as session:

        def worker(_: int) -> Callable[[], Awaitable[None]]:
            async def one() -> None:
                async with session.get(f"{next(spread)}/healthz") as response:
                    await response.read()
                    response.raise_for_status()
            return one

        return await timed(clients, count, worker)


def sample_items() -> list[EvidenceItem]:
    """Sample-TEE evidence bound to a runtime data, as a KBS builds it for the AS."""
    runtime = primary_runtime_data("bench-nonce", TeeKeyPair.generate().public_jwk(), "")
    algorithm = hash_algorithm_for("sample")
    evidence = SampleAttester().get_evidence(runtime_data_digest(runtime, HashAlgorithm.parse(algorithm)))
    return [EvidenceItem("sample", url_encode(json.dumps(evidence).encode()), json.dumps(runtime, separators=(",", ":")),
                         algorithm, None)]


async def as_evaluations(as_addrs: list[str], clients: int, count: int) -> float:
    items = sample_items()
    services = [GrpcAttestationService(addr) for addr in as_addrs]
    spread = itertools.cycle(services)
    try:
        def worker(_: int) -> Callable[[], Awaitable[None]]:
            async def one() -> None:
                await next(spread).evaluate(items, list(POLICY_IDS))
            return one

        return await timed(clients, count, worker)
    finally:
        for service in services:
            await service.close()


async def measure(cluster: Cluster, scenario: str, clients: int, count: int) -> Result:
    urls = cluster.kbs_urls
    async with admin(urls[0], cluster.admin_token) as client:
        await client.set_resource_policy(ALLOW_ALL)
        await client.set_resource(RESOURCE, b"benchmark secret")
    as_addrs = [f"http://127.0.0.1:{port}" for port in cluster.as_ports]
    await flows(urls, clients, WARMUP_FLOWS)
    await as_evaluations(as_addrs, clients, WARMUP_FLOWS)
    flow_seconds = await flows(urls, clients, count)
    healthz_seconds = await healthz(urls, clients, count)
    as_seconds = await as_evaluations(as_addrs, clients, count)
    storage, replicas = scenario.split(":")
    return Result(scenario, storage, int(replicas), clients, count, count / flow_seconds, REQUESTS_PER_FLOW * count / flow_seconds,
                  count / healthz_seconds, count / as_seconds)


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[Callable[[], str]]:
    """A callable giving a database URL for each scenario: `url` itself, or a new database on a private server."""
    if url is not None:
        yield lambda: url
        return
    servers: Any = importlib.import_module("tests.storage.servers")
    server = servers.start_postgres()
    try:
        yield lambda: str(server.new_database())
    finally:
        server.stop()


def run(scenarios: list[str], clients: int, count: int, postgres_url: str | None, workdir: Path) -> list[Result]:
    results = []
    needs_postgres = any(s.startswith("postgres") for s in scenarios)
    with postgres(postgres_url) if needs_postgres else contextlib.nullcontext(lambda: "") as database:
        for scenario in scenarios:
            storage, replicas = scenario.split(":")
            url = database() if storage == "postgres" else None
            root = workdir / scenario.replace(":", "-")
            with Cluster(root, storage_url=url, kbs_replicas=int(replicas), as_replicas=int(replicas)) as cluster:
                results.append(asyncio.run(measure(cluster, scenario, clients, count)))
            print(f"done {scenario}", file=sys.stderr, flush=True)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| storage | KBS+AS replicas | flows/s | HTTP requests/s | bare /healthz/s | AS evaluations/s | round trips per flow | "
        "AS evaluations per flow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.storage} | {r.replicas} | {r.flows_per_s:.1f} | {r.requests_per_s:.1f} | {r.healthz_per_s:.0f} | "
                     f"{r.as_evaluations_per_s:.1f} | {r.round_trips_per_flow:.1f} | {r.evaluations_per_flow:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flow", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--count", type=int, default=200, help="flows (and baseline operations) per scenario (default 200)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="storage:replicas, repeatable (default: all)")
    parser.add_argument("--postgres-url", help="PostgreSQL database to use (default: a private server)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.count < 1:
        parser.error("--clients and --count must be at least 1")
    with tempfile.TemporaryDirectory(prefix="pytrustee-bench-") as workdir:
        results = run(args.scenario or list(SCENARIOS), args.clients, args.count, args.postgres_url, Path(workdir))
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
