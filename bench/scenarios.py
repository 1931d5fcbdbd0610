"""The flow scenarios of `python -m bench`: closed- and open-loop runs against a started deployment.

Every level (a closed-loop client count or an open-loop rate) reports
flows/s, latency percentiles, CPU per served flow of each server process
tree (KBS, AS, RVPS, children such as Rego workers included), the load
generator's own CPU per flow, and efficiency = floor / server CPU per flow,
with the floor (`bench.floor`) timed in this process in the same run, before
and after the load (each piece keeps its least time).
Peak RSS per server is sampled over the whole scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import floor, framework, load
from bench.client import ALLOW_ALL, admin
from bench.cluster import Cluster
from bench.procstat import CpuMeter, RssSampler
from trustee_common.heap import settle_heap

SERVERS = ("KBS", "AS", "RVPS")
SHM = Path("/dev/shm")  # noqa: S108 (mkdtemp below: a private folder with a random name)


#: A closed-loop level runs at least this many flows per client: with 2, the 256-client level was mostly its
#: start (every client's first flow at once, the refused ones backing off), 172 flows/s against 273 with 6.
FLOWS_PER_CLIENT = 6


@dataclass(frozen=True)
class Settings:
    """How much load: closed-loop client counts, open-loop rates, flows per level."""

    clients: tuple[int, ...] = (1, 16, 64, 256)
    #: Flows per closed-loop level (at least `FLOWS_PER_CLIENT` per client).
    flows: int = 400
    #: Open-loop arrival rates (flows/s); `capacity_multiples` adds rates relative to the best closed-loop rate.
    rates: tuple[float, ...] = (100.0, 200.0, 300.0)
    capacity_multiples: tuple[float, ...] = (2.0,)
    open_seconds: float = 10.0
    poisson: bool = True
    #: Open loop: load-generator processes sharing the arrivals (`load.GeneratorPool`; 1: this process alone).
    generators: int = 1
    floor_rounds: int = 300
    #: Flows through the bare frameworks (`bench.framework`).
    framework_flows: int = 2000
    warmup_flows: int = 8
    workers: int = 1
    #: `--workers` of the AS (None: `workers`).
    as_workers: int | None = None
    #: Extra `[http_server]` keys of the KBS, e.g. (("max_in_flight_requests", 16),).
    kbs_http: tuple[tuple[str, Any], ...] = ()
    #: Extra `[policy_engine]` keys of the KBS and the AS, e.g. (("result_cache_entries", 0),).
    policy_engine: tuple[tuple[str, Any], ...] = ()


QUICK = Settings(clients=(1, 16), flows=24, rates=(50.0,), capacity_multiples=(), open_seconds=1.5, floor_rounds=10,
                 framework_flows=100, warmup_flows=2)


def server_pids(cluster: Cluster) -> dict[str, int]:
    """{"KBS": pid, "AS": pid, "RVPS": pid} of a one-replica cluster (the KBS alone with the AS built in)."""
    found: dict[str, int] = {}
    services = [("KBS", cluster.kbs[0])]
    if not cluster.builtin_as:
        services += [("AS", cluster.attestation[0]), ("RVPS", cluster.rvps)]
    for kind, service in services:
        assert service.popen is not None
        found[kind] = service.popen.pid
    return found


def efficiency(floor_us: float, server_ms: float) -> float:
    return round(floor_us / 1e3 / server_ms, 3) if server_ms > 0 else 0.0


def level_report(outcomes: load.Outcomes, meter: CpuMeter, floor_us: float) -> dict[str, Any]:
    served = max(outcomes.served, 1)
    cpu_ms = {name: round(seconds / served * 1e3, 3) for name, seconds in meter.servers.items()}
    server_ms = sum(cpu_ms.values())
    latencies = outcomes.latencies
    return {
        "served": outcomes.served,
        "refused": outcomes.refused,
        "dropped": outcomes.dropped,
        "errors": outcomes.errors,
        "error_samples": outcomes.error_samples,
        "seconds": round(meter.wall, 3),
        "flows_per_s": round(outcomes.served / meter.wall, 2) if meter.wall > 0 else 0.0,
        "latency_ms": {f"p{p}": round(load.percentile(latencies, p / 100) * 1e3, 2) for p in (50, 95, 99)},
        "max_wait_ms": round(outcomes.max_wait * 1e3, 1),
        "max_request_wait_ms": round(outcomes.max_request_wait * 1e3, 1),
        "generator_max_lag_ms": round(outcomes.max_generator_lag * 1e3, 1),
        "cpu_ms_per_flow": cpu_ms,
        "server_cpu_ms_per_flow": round(server_ms, 3),
        "generator_cpu_ms_per_flow": round((meter.generator + outcomes.other_generator_cpu) / served * 1e3, 3),
        "efficiency": efficiency(floor_us, server_ms),
    }


@dataclass(frozen=True)
class Probe:
    """What a level is measured with: the server pids, the RSS sampler running meanwhile, the floor."""

    pids: dict[str, int]
    rss: RssSampler
    floor_us: float


async def measured(probe: Probe, run: Callable[[], Awaitable[load.Outcomes]]) -> dict[str, Any]:
    meter = CpuMeter(probe.pids, exclude=lambda: probe.rss.cpu_seconds)
    meter.start()
    outcomes = await run()
    meter.stop()
    return level_report(outcomes, meter, probe.floor_us)


async def prepare(cluster: Cluster) -> str:
    url = cluster.kbs_urls[0]
    async with admin(url, cluster.admin_token) as client:
        await client.set_resource_policy(ALLOW_ALL)
        await client.set_resource(load.RESOURCE, load.SECRET)
    return url


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True, file=sys.stderr)


async def closed_levels(url: str, probe: Probe, settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for clients in settings.clients:
        count = max(settings.flows, FLOWS_PER_CLIENT * clients)
        def run(clients: int = clients, count: int = count) -> Awaitable[load.Outcomes]:
            return load.closed_loop(url, clients, count)

        row = await measured(probe, run)
        rows.append({"clients": clients, **row})
        progress(f"closed loop, {clients} clients: {row['flows_per_s']} flows/s, p99 {row['latency_ms']['p99']} ms")
    return rows


def open_rates(settings: Settings, capacity: float) -> list[float]:
    extra = [round(multiple * capacity, 1) for multiple in settings.capacity_multiples if capacity > 0]
    return [*settings.rates, *extra]


async def open_levels(url: str, probe: Probe, settings: Settings, capacity: float) -> list[dict[str, Any]]:
    rows = []
    pool = load.GeneratorPool(settings.generators) if settings.generators > 1 else None
    open_loop = load.open_loop if pool is None else pool.open_loop
    try:
        for rate in open_rates(settings, capacity):
            rows.append(await open_level(url, probe, settings, rate, open_loop))
    finally:
        if pool is not None:
            pool.close()
    return rows


async def open_level(url: str, probe: Probe, settings: Settings, rate: float,
                     open_loop: Callable[..., Awaitable[load.Outcomes]]) -> dict[str, Any]:
    def run() -> Awaitable[load.Outcomes]:
        return open_loop(url, rate, settings.open_seconds, poisson=settings.poisson)

    row = await measured(probe, run)
    arrivals = row["served"] + row["refused"] + row["dropped"] + row["errors"]
    counts = ", ".join(f"{key} {row[key]}" for key in ("served", "refused", "dropped", "errors"))
    progress(f"open loop, {rate} flows/s: {counts}")
    return {"rate": rate, "arrivals": arrivals, "arrivals_per_s": round(arrivals / settings.open_seconds, 1), **row}


async def flow_run(cluster: Cluster, settings: Settings, *, open_loop: bool = True) -> dict[str, Any]:
    url = await prepare(cluster)
    pids = server_pids(cluster)
    floor_us = floor.measure(settings.floor_rounds)
    progress(f"floor {floor_us['total']} us per flow")
    framework_us = await framework.measure(settings.framework_flows, grpc_hop=not cluster.builtin_as)
    progress(f"framework floor {framework_us['total']} us per flow")
    await load.warm_up(url, settings.warmup_flows)
    settle_heap()  # the generator's own full collections would otherwise count as server latency
    with RssSampler(pids) as rss:
        probe = Probe(pids, rss, floor_us["total"])
        closed = await closed_levels(url, probe, settings)
        capacity = max((row["flows_per_s"] for row in closed), default=0.0)
        opened = await open_levels(url, probe, settings, capacity) if open_loop else []
    # Timed again after the load: other work on the machine inflates CPU time, so each piece keeps its least time.
    floor_runs = [floor_us, floor.measure(settings.floor_rounds)]
    floor_us = floor.least(*floor_runs)
    for row in (*closed, *opened):
        row["efficiency"] = efficiency(floor_us["total"], row["server_cpu_ms_per_flow"])
    return {"floor_us": floor_us, "floor_us_runs": floor_runs, "framework_us": framework_us,
            "efficiency_ceiling": framework.ceiling(floor_us["total"], framework_us["total"]),
            "closed_loop": closed, "open_loop": opened, "capacity_flows_per_s": capacity,
            "peak_rss_mib": rss.peaks_mib(), "arrivals": "poisson" if settings.poisson else "fixed-interval",
            "generators": settings.generators,
            "workers": {"KBS": cluster.workers, **({} if cluster.builtin_as else {"AS": cluster.as_count})}}


@contextlib.contextmanager
def postgres_database(url: str | None) -> Iterator[str]:
    """`url` itself, or a new database on a private server (the test suite's launcher, tests/storage/servers.py)."""
    if url is not None:
        yield url
        return
    servers: Any = importlib.import_module("tests.storage.servers")
    server = servers.start_postgres()
    try:
        yield str(server.new_database())
    finally:
        server.stop()


def cluster(root: Path, settings: Settings, storage_url: str | None = None, *, builtin_as: bool = False) -> Cluster:
    return Cluster(root, storage_url=storage_url, workers=settings.workers, as_workers=settings.as_workers,
                   kbs_http=dict(settings.kbs_http),
                   policy_engine=dict(settings.policy_engine), builtin_as=builtin_as)


def flow(workdir: Path, settings: Settings) -> dict[str, Any]:
    with cluster(workdir / "flow", settings) as running:
        return {"topology": "KBS, AS, RVPS processes over gRPC, embedded SQLite", **asyncio.run(flow_run(running, settings))}


def flow_builtin(workdir: Path, settings: Settings) -> dict[str, Any]:
    with cluster(workdir / "flow-builtin", settings, builtin_as=True) as running:
        topology = "KBS process with the AS built in (coco_as_builtin, BuiltIn RVPS), embedded SQLite"
        return {"topology": topology, **asyncio.run(flow_run(running, settings))}


def flow_postgres(workdir: Path, settings: Settings, postgres_url: str | None) -> dict[str, Any]:
    with postgres_database(postgres_url) as url, cluster(workdir / "flow-postgres", settings, url) as running:
        return {"topology": "KBS, AS, RVPS processes over gRPC, one PostgreSQL database", **asyncio.run(flow_run(running, settings))}


@dataclass(frozen=True)
class ScaleSettings:
    large: tuple[int, int, int] = (100_000, 100_000, 10_000)
    small: tuple[int, int, int] = (10, 10, 10)
    clients: int = 64
    flows: int = 400
    #: Runs of each state, alternating small and large, so machine noise hits both alike.
    rounds: int = 3
    floor_rounds: int = 100


QUICK_SCALE = ScaleSettings(large=(2_000, 2_000, 200), clients=16, flows=32, rounds=1, floor_rounds=20)
SCALE_STATES = ("small", "large")


async def closed_run(running: Cluster, clients: int, flows: int, floor_us: float) -> dict[str, Any]:
    """One closed-loop level against an already prepared deployment, with its peak RSS."""
    url, pids = running.kbs_urls[0], server_pids(running)
    with RssSampler(pids) as rss:
        row = await measured(Probe(pids, rss, floor_us), lambda: load.closed_loop(url, clients, flows))
    return {**row, "peak_rss_mib": rss.peaks_mib()}


@contextlib.contextmanager
def state_dir(fallback: Path) -> Iterator[Path]:
    """A folder in RAM (/dev/shm) when there is one: creating and removing 100,000 files on a disk mounted with
    `discard` takes minutes. Both states use it alike; flows only read resources, and sessions are not fsynced anyway."""
    if not SHM.is_dir():
        yield fallback
        return
    folder = Path(tempfile.mkdtemp(prefix="pytrustee-bench-scale-", dir=SHM))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scale(workdir: Path, settings: Settings, scale_settings: ScaleSettings) -> dict[str, Any]:
    """Both deployments run side by side (idle while the other is measured); runs alternate small, large, small, ..."""
    with state_dir(workdir) as folder:
        return scale_in(folder, settings, scale_settings)


def scale_in(workdir: Path, settings: Settings, scale_settings: ScaleSettings) -> dict[str, Any]:
    from bench import state

    floor_us = floor.measure(scale_settings.floor_rounds)
    sizes = {"small": scale_settings.small, "large": scale_settings.large}
    result: dict[str, Any] = {"clients": scale_settings.clients, "flows_per_run": scale_settings.flows, "floor_us": floor_us}
    with contextlib.ExitStack() as stack:
        running: dict[str, Cluster] = {}
        for label in SCALE_STATES:
            resources, sessions, values = sizes[label]
            deployment = cluster(workdir / f"scale-{label}", settings)
            started = time.perf_counter()
            state.populate(deployment, resources=resources, sessions=sessions, reference_values=values)
            populated = round(time.perf_counter() - started, 1)
            progress(f"scale {label}: {resources} resources, {sessions} sessions, {values} reference values in {populated} s")
            running[label] = stack.enter_context(deployment)
            asyncio.run(prepare(running[label]))
            asyncio.run(load.warm_up(running[label].kbs_urls[0], settings.warmup_flows))
            result[label] = {"resources": resources, "sessions": sessions, "reference_values": values, "populate_seconds": populated,
                             "runs": []}
        for _ in range(scale_settings.rounds):
            for label in SCALE_STATES:
                row = asyncio.run(closed_run(running[label], scale_settings.clients, scale_settings.flows, floor_us["total"]))
                result[label]["runs"].append(row)
                progress(f"scale {label}: {row['flows_per_s']} flows/s")
    for label in SCALE_STATES:
        result[label]["median_flows_per_s"] = statistics.median(run["flows_per_s"] for run in result[label]["runs"])
    small, large = (result[label]["median_flows_per_s"] for label in SCALE_STATES)
    result["throughput_ratio_large_to_small"] = round(large / small, 3) if small else 0.0
    return result


@dataclass
class Errors:
    """Every flow error of a result tree (closed loop, open loop, scale runs)."""

    count: int = 0
    samples: list[str] = field(default_factory=list)

    def collect(self, value: object) -> Errors:
        if isinstance(value, dict):
            if isinstance(value.get("errors"), int):
                self.count += value["errors"]
                self.samples.extend(value.get("error_samples", []))
            for item in value.values():
                self.collect(item)
        elif isinstance(value, list):
            for item in value:
                self.collect(item)
        return self
