"""Results of `python -m bench`: the stdout tables, the JSON file and the PNG chart of each scenario."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

SERVERS = ("KBS", "AS", "RVPS")


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(), "system": platform.platform()}


def _cpu(row: dict[str, Any]) -> str:
    by = row["cpu_ms_per_flow"]
    return " | ".join(f"{by.get(name, 0.0):.2f}" for name in SERVERS)


def _latency(row: dict[str, Any]) -> str:
    return " | ".join(f"{row['latency_ms'][p]:.0f}" for p in ("p50", "p95", "p99"))


def _rss(result: dict[str, Any]) -> str:
    peaks = result["peak_rss_mib"]
    return ", ".join(f"{name} {peaks[name]['process']:.0f} MiB ({peaks[name]['with_children']:.0f} with children)" for name in peaks)


def flow_table(result: dict[str, Any]) -> str:
    floor = result["floor_us"]
    lines = [
        "closed loop (each client: fresh TEE key, /auth, /attest, GET resource; back to back):",
        "| clients | flows | flows/s | p50 ms | p95 ms | p99 ms | KBS ms CPU/flow | AS | RVPS | servers | generator | efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["closed_loop"]:
        lines.append(f"| {row['clients']} | {row['served']} | {row['flows_per_s']:.1f} | {_latency(row)} | {_cpu(row)} | "
                     f"{row['server_cpu_ms_per_flow']:.2f} | {row['generator_cpu_ms_per_flow']:.2f} | {row['efficiency']:.2f} |")
    if result["open_loop"]:
        lines += [
            "",
            f"open loop ({result['arrivals']} arrivals, one attempt per flow; refused = 503, dropped = connection closed unanswered):",
            "| rate/s | arrivals | served | refused | dropped | errors | served/s | p50 ms | p95 ms | p99 ms | max wait ms "
            "(flow / request) | generator lag ms | servers ms CPU/served flow |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["open_loop"]:
            counts = " | ".join(str(row[key]) for key in ("arrivals", "served", "refused", "dropped", "errors"))
            lines.append(f"| {row['rate']:g} | {counts} | {row['flows_per_s']:.1f} | {_latency(row)} | {row['max_wait_ms']:.0f} / "
                         f"{row.get('max_request_wait_ms', 0):.0f} | {row.get('generator_max_lag_ms', 0):.0f} | "
                         f"{row['server_cpu_ms_per_flow']:.2f} |")
    pieces = ", ".join(f"{name} {value:.0f}" for name, value in floor.items() if name != "total")
    workers = ", ".join(f"{name} {count}" for name, count in result.get("workers", {}).items())
    lines += ["", f"floor {floor['total']:.0f} us CPU per flow ({pieces}); peak RSS: {_rss(result)}; worker processes: {workers}"]
    if "framework_us" in result:
        bare = result["framework_us"]
        parts = ", ".join(f"{name} {value:.0f}" for name, value in bare.items() if name != "total")
        lines.append(f"framework floor {bare['total']:.0f} us CPU per flow ({parts}): efficiency ceiling with these frameworks "
                     f"{result['efficiency_ceiling']:.2f}")
    return "\n".join(lines)


def scale_table(result: dict[str, Any]) -> str:
    lines = [
        f"scale ({result['clients']} clients, closed loop, {result['flows_per_run']} flows per run; runs alternate small and large):",
        "| state | resources | sessions | reference values | flows/s per run | median flows/s | p99 ms (last run) | "
        "servers ms CPU/flow (last run) | KBS | AS | RVPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in ("small", "large"):
        run = result[label]
        last = run["runs"][-1]
        rates = ", ".join(f"{r['flows_per_s']:.1f}" for r in run["runs"])
        counts = " | ".join(str(run[key]) for key in ("resources", "sessions", "reference_values"))
        lines.append(f"| {label} | {counts} | {rates} | {run['median_flows_per_s']:.1f} | {last['latency_ms']['p99']:.0f} | "
                     f"{last['server_cpu_ms_per_flow']:.2f} | {_cpu(last)} |")
    lines.append(f"throughput large / small (medians): {result['throughput_ratio_large_to_small']:.2f}")
    return "\n".join(lines)


def verify_table(result: dict[str, Any]) -> str:
    lines = [f"verify-{result['tee']} ({result['rounds']} rounds, median us per evidence):"]
    for row in result["rows"]:
        reference = ("dcap-qvl", row["dcap_qvl"]) if "dcap_qvl" in row else ("bare signature", row["bare_signature"])
        lines.append(f"  {row['evidence']}: ours {row['ours']['median_us']:.0f}, {reference[0]} {reference[1]['median_us']:.0f}")
    return "\n".join(lines)


def table(name: str, result: dict[str, Any]) -> str:
    if name.startswith("verify-"):
        return verify_table(result)
    if name == "scale":
        return scale_table(result)
    return f"{name}: {result['topology']}\n" + flow_table(result)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1) + "\n")


def chart(path: Path, name: str, result: dict[str, Any]) -> None:
    """flows/s and p99 against clients; stacked CPU per flow by process, with the floor (and the framework floor
    on top of it); open-loop outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed, opened = result["closed_loop"], result["open_loop"]
    panels = 3 if opened else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    clients = [str(row["clients"]) for row in closed]
    ax = axes[0]
    ax.plot(clients, [row["flows_per_s"] for row in closed], "o-", color="tab:blue")
    ax.set_xlabel("clients (closed loop)")
    ax.set_ylabel("flows/s", color="tab:blue")
    twin = ax.twinx()
    twin.plot(clients, [row["latency_ms"]["p99"] for row in closed], "s--", color="tab:red")
    twin.set_ylabel("p99 latency (ms)", color="tab:red")
    ax.set_ylim(bottom=0)
    twin.set_ylim(bottom=0)
    ax.set_title(name)
    ax = axes[1]
    bottom = [0.0] * len(closed)
    for server in (*SERVERS, "generator"):
        values = [row["generator_cpu_ms_per_flow"] if server == "generator" else row["cpu_ms_per_flow"].get(server, 0.0) for row in closed]
        ax.bar(clients, values, bottom=bottom, label=server, hatch="//" if server == "generator" else None)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.axhline(result["floor_us"]["total"] / 1e3, color="black", linestyle=":", label="floor")
    if "framework_us" in result:
        ceiling = (result["floor_us"]["total"] + result["framework_us"]["total"]) / 1e3
        ax.axhline(ceiling, color="black", linestyle="--", label="floor + framework floor")
    ax.set_xlabel("clients")
    ax.set_ylabel("CPU ms per flow")
    ax.legend(fontsize=7)
    if opened:
        ax = axes[2]
        rates = [f"{row['rate']:g}" for row in opened]
        base = [0] * len(opened)
        for key, label in (("served", "served"), ("refused", "refused (503)"), ("dropped", "dropped"), ("errors", "errors")):
            values = [row[key] for row in opened]
            ax.bar(rates, values, bottom=base, label=label)
            base = [b + v for b, v in zip(base, values, strict=True)]
        ax.set_xlabel("offered flows/s (open loop)")
        ax.set_ylabel("flows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
