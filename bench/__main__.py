"""`python -m bench [SCENARIO ...] [--quick]`: throughput, latency, CPU and memory of the guest flow, and verifier timings.

Scenarios:
  flow            the `trustee run` topology (KBS, AS, RVPS processes over gRPC, embedded SQLite)
  flow-builtin    the KBS alone, the AS inside it (coco_as_builtin, BuiltIn RVPS), embedded SQLite
  flow-postgres   the same on one PostgreSQL database (--postgres-url, or a private server)
  scale           throughput with 100,000 resources, 100,000 live sessions and 10,000 reference values vs 10 of each
  verify-<tee>    time per evidence of our verifier on the corpus (tdx also with dcap-qvl); tee: tdx snp tpm az-snp-vtpm az-tdx-vtpm
  all             every scenario above

Flow scenarios run closed loop at each --clients count and open loop at each
--rates rate plus 2x the measured capacity, and report flows/s, latency
p50/p95/p99, CPU per flow of each server process tree and of the load
generator, peak RSS per server, and efficiency = floor / server CPU per flow
(the floor, `bench.floor`, timed in this process in the same run), and the
framework floor (`bench.framework`: bare aiohttp and grpc.aio servers doing a
flow's requests with empty handlers) with the efficiency ceiling it leaves. Each
scenario writes <out>/<scenario>.json (and a .png chart for flow scenarios).
`--quick` (flow, small scale, verify-tdx when no scenario is named) takes
under a minute. The exit status is 1 when any flow failed (a 503 refusal in
open loop is counted, not a failure). No thresholds: numbers, not verdicts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import signal
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from bench import report
from bench.scenarios import QUICK, QUICK_SCALE, Errors, ScaleSettings, Settings, flow, flow_builtin, flow_postgres, progress, scale
from bench.verify import DEFAULT_CORPUS, TEES, verify
from trustee_common.workers import available_cores, default_as_workers

FLOWS = ("flow", "flow-builtin", "flow-postgres", "scale")
SCENARIOS = (*FLOWS, *(f"verify-{tee}" for tee in TEES))
QUICK_SCENARIOS = ("flow", "scale", "verify-tdx")
DEFAULT_OUT = Path(__file__).parent / "results"


def numbers(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> tuple[float, ...] | tuple[int, ...]:
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None,
                                epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"{', '.join(SCENARIOS)} or all (default: flow)")
    p.add_argument("--quick", action="store_true", help="a smoke run of under a minute (few flows, 1 and 16 clients, one rate)")
    p.add_argument("--clients", type=numbers(int), help="closed-loop client counts (default 1,16,64,256)")
    p.add_argument("--flows", type=int, help="flows per closed-loop level (default 400, and at least 6 per client)")
    p.add_argument("--rates", type=numbers(float), help="open-loop arrival rates, flows/s (default 100,200,300; plus 2x capacity)")
    p.add_argument("--open-seconds", type=float, help="duration of each open-loop rate (default 10)")
    p.add_argument("--arrivals", choices=("poisson", "fixed"), default="poisson", help="open-loop arrival process (default poisson)")
    p.add_argument("--generators", type=int, help="open loop: load-generator processes sharing the arrivals (default 1)")
    p.add_argument("--workers", type=int,
                   help="worker processes per KBS and AS (their --workers; default as `trustee run`: the available cores for "
                        "the KBS, half of them for the AS)")
    p.add_argument("--kbs-http", type=http_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="extra [http_server] key of the KBS, VALUE in TOML (e.g. max_in_flight_requests=16); repeatable")
    p.add_argument("--policy-engine", type=http_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="extra [policy_engine] key of the KBS and the AS, VALUE in TOML (e.g. result_cache_entries=0: "
                        "every flow's claims evaluated as if new); repeatable")
    p.add_argument("--postgres-url", help="flow-postgres: the database to use (default: a private server, tests/storage/servers.py)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=f"verify-*: evidence corpus (default {DEFAULT_CORPUS})")
    p.add_argument("--rounds", type=int, help="verify-*: timed verifications per evidence (default 200; --quick 5)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <scenario>.json and .png (default bench/results)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG charts")
    return p


def http_setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with a TOML value."""
    key, sep, value = text.partition("=")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"] if sep and key.strip() else None
    except tomllib.TOMLDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not TOML ({exc})") from None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), parsed


def settings(args: argparse.Namespace) -> tuple[Settings, ScaleSettings]:
    base = QUICK if args.quick else Settings()
    scale_settings = QUICK_SCALE if args.quick else ScaleSettings()
    workers = {"workers": available_cores(), "as_workers": default_as_workers()} if args.workers is None else {"workers": args.workers}
    changes: dict[str, Any] = {**workers, "poisson": args.arrivals == "poisson", "kbs_http": tuple(args.kbs_http),
                               "policy_engine": tuple(args.policy_engine)}
    for name in ("clients", "flows", "rates", "open_seconds", "generators"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(base, **changes), scale_settings


def chosen(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[str]:
    names = args.scenarios or (list(QUICK_SCENARIOS) if args.quick else ["flow"])
    if "all" in names:
        names = list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)} or all")
    return list(dict.fromkeys(names))


def run_one(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    flow_settings, scale_settings = settings(args)
    if name == "flow":
        return flow(workdir, flow_settings)
    if name == "flow-builtin":
        return flow_builtin(workdir, flow_settings)
    if name == "flow-postgres":
        return flow_postgres(workdir, flow_settings, args.postgres_url)
    if name == "scale":
        return scale(workdir, flow_settings, scale_settings)
    rounds = args.rounds or (5 if args.quick else 200)
    return verify(name.removeprefix("verify-"), args.corpus, rounds)


def stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, stop)  # unwind, so the started servers are stopped too
    too_few = any(value is not None and value < 1 for value in (args.workers, args.flows, args.generators))
    if too_few or (args.open_seconds is not None and args.open_seconds <= 0):
        p.error("--workers, --flows and --generators must be at least 1, --open-seconds positive")
    names = chosen(args, p)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="pytrustee-bench-") as workdir:
        for name in names:
            progress(f"scenario {name}")
            started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            result = run_one(name, args, Path(workdir))
            document = {"scenario": name, "started": started, "quick": args.quick, "command": ["python", "-m", "bench", *sys.argv[1:]],
                        "machine": report.machine(), "result": result}
            report.write_json(args.out / f"{name}.json", document)
            if name in ("flow", "flow-builtin", "flow-postgres") and not args.no_chart:
                report.chart(args.out / f"{name}.png", name, result)
            print(report.table(name, result) + "\n", flush=True)
            errors = Errors().collect(result)
            if errors.count:
                failed += errors.count
                print(f"{name}: {errors.count} flow(s) failed, e.g. {errors.samples[:3]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
