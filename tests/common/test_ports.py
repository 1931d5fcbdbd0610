"""The test-port allocator: distinct ports across processes, never from the kernel's ephemeral range."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.ports import STATE_FILE, allocate_ports, allocation_range

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _ephemeral() -> tuple[int, int]:
    low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
    return int(low), int(high)


def test_ports_avoid_the_ephemeral_range() -> None:
    low, high = _ephemeral()
    first, last = allocation_range()
    assert last < low or first > high
    for port in allocate_ports(20):
        assert first <= port <= last
        assert not low <= port <= high


def test_concurrent_processes_get_distinct_ports() -> None:
    code = "from tests.ports import allocate_ports; print(*allocate_ports(25))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    ports = [int(p) for proc in procs for p in proc.communicate(timeout=60)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(ports) == 150
    assert len(set(ports)) == 150


def test_consecutive_blocks() -> None:
    base, ctrl = allocate_ports(2, consecutive=True)
    assert ctrl == base + 1


def test_a_listening_port_is_skipped() -> None:
    first, last = allocation_range()
    port = allocate_ports(1)[0]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        STATE_FILE.write_text(str(port - first))  # the next candidate is the listening port
        got = allocate_ports(1)[0]
    assert got != port
    assert first <= got <= last
