"""Smoke test of the benchmark (`python -m bench.flow`): it runs end to end with a tiny count. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage.servers import PostgresServer

pytestmark = pytest.mark.e2e


def test_benchmark_runs_every_kind_of_scenario(postgres_server: PostgresServer, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = [sys.executable, "-m", "bench.flow", "--count", "3", "--clients", "2", "--scenario", "embedded:1",
            "--scenario", "postgres:2", "--postgres-url", postgres_server.new_database(), "--json", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())
    assert [(r["storage"], r["replicas"], r["flows"]) for r in rows] == [("embedded", 1, 3), ("postgres", 2, 3)]
    assert "| embedded | 1 |" in result.stdout and "| postgres | 2 |" in result.stdout


async def test_framework_floor_drives_both_bare_servers() -> None:
    from bench import framework

    # CPU times come from /proc in 10 ms ticks: enough flows that each part spends several ticks (40 flows of the
    # gRPC client's ~0.2 ms could read as zero).
    with_grpc = await framework.measure(400)
    http_only = await framework.measure(100, grpc_hop=False)
    assert set(with_grpc) == {"http_server", "grpc_client", "grpc_server", "total"}
    assert set(http_only) == {"http_server", "total"}
    assert all(value > 0 for value in with_grpc.values())
    assert with_grpc["total"] == pytest.approx(sum(v for k, v in with_grpc.items() if k != "total"), abs=0.2)
    assert framework.ceiling(800.0, 800.0) == 0.5
    assert framework.ceiling(0.0, 0.0) == 0.0


def test_open_loop_shared_by_two_generator_processes(tmp_path: Path) -> None:
    """`--generators 2`: the open loop's arrivals come from two processes, and their outcomes and CPU add up."""
    args = [sys.executable, "-m", "bench", "flow", "--quick", "--clients", "1", "--flows", "4", "--rates", "40",
            "--open-seconds", "2", "--generators", "2", "--no-chart", "--out", str(tmp_path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "flow.json").read_text())["result"]
    assert run["generators"] == 2
    [level] = run["open_loop"]
    assert level["errors"] == 0 and level["served"] + level["refused"] == level["arrivals"]
    assert 40 <= level["arrivals"] <= 130  # two Poisson streams of 20 flows/s for 2 s
    assert level["generator_cpu_ms_per_flow"] > 0


@pytest.mark.parametrize("flag", [("--generators", "0"), ("--workers", "0"), ("--flows", "-1"), ("--open-seconds", "0")])
def test_bad_counts_are_refused_with_a_usage_error(flag: tuple[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "flow", *flag], capture_output=True, text=True, timeout=60, check=False,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 2
    assert "--workers, --flows and --generators must be at least 1, --open-seconds positive" in result.stderr
    assert "Traceback" not in result.stderr
