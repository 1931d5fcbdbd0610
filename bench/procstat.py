"""CPU time and peak RSS of server processes and their children (psutil), and of this process.

`tree_cpu_seconds` is user + system time of a process and every live
descendant (e.g. Rego worker processes), plus the time of descendants that
already exited and were waited for (`children_user/system`), so a worker
replaced during a run still counts. `RssSampler` polls the resident set of
each process (alone, and with its descendants) in a thread and keeps the peak.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil

SAMPLE_SECONDS = 0.2
MIB = 1 << 20


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def own_cpu_seconds() -> float:
    """This process (the load generator): every thread, user + system."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def rss_bytes(pid: int) -> tuple[int, int]:
    """(RSS of the process alone, RSS summed over it and its descendants)."""
    own = tree = 0
    for index, process in enumerate(_tree(pid)):
        try:
            rss = int(process.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
        tree += rss
        if index == 0:
            own = rss
    return own, tree


@dataclass
class RssSampler:
    """Peak RSS per named pid while running (a daemon thread; use as a context manager)."""

    pids: Mapping[str, int]
    interval: float = SAMPLE_SECONDS
    peak_own: dict[str, int] = field(default_factory=dict)
    peak_tree: dict[str, int] = field(default_factory=dict)
    #: CPU this sampler's thread used (not load-generator work: `CpuMeter` subtracts it).
    cpu_seconds: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                own, tree = rss_bytes(pid)
            except psutil.NoSuchProcess:
                continue
            self.peak_own[name] = max(self.peak_own.get(name, 0), own)
            self.peak_tree[name] = max(self.peak_tree.get(name, 0), tree)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            start = time.thread_time()
            self.sample()
            self.cpu_seconds += time.thread_time() - start

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peaks_mib(self) -> dict[str, dict[str, float]]:
        return {name: {"process": round(self.peak_own.get(name, 0) / MIB, 1), "with_children": round(self.peak_tree.get(name, 0) / MIB, 1)}
                for name in self.pids}


@dataclass
class CpuMeter:
    """CPU seconds used by each named server (process tree) and by this process between `start` and `stop`.

    `exclude` reads CPU seconds this process spent on measuring (the RSS
    sampler), which are not counted as the generator's.
    """

    pids: Mapping[str, int]
    exclude: Callable[[], float] = lambda: 0.0
    servers: dict[str, float] = field(default_factory=dict)
    generator: float = 0.0
    wall: float = 0.0

    def start(self) -> None:
        self._before = cpu_snapshot(self.pids)
        self._own = own_cpu_seconds() - self.exclude()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.generator = own_cpu_seconds() - self.exclude() - self._own
        after = cpu_snapshot(self.pids)
        self.servers = {name: after[name] - self._before[name] for name in self.pids}
