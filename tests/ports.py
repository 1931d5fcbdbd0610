"""Race-free TCP ports for the helper servers the tests start.

Asking the kernel for a free port (`bind(("127.0.0.1", 0))`) and closing it
again leaves a window in which the port is free for anyone: the kernel hands
the same ephemeral range to every outgoing connection, and another test
process may be handed the same number too. A private PostgreSQL once lost its
port in that window and a whole module of tests failed.

This allocator closes both gaps:

- ports come from below the kernel's ephemeral range
  (`/proc/sys/net/ipv4/ip_local_port_range`), so no outgoing connection of
  any process can be given one of them;
- every test process on the machine (pytest and the processes it starts, two
  concurrent pytest runs included) draws from one rotating counter kept in a
  file under an exclusive `flock`, so a port is not handed out again until
  the whole range has gone round, long after the server that used it stopped;
- each candidate is still test-bound before it is returned, so a port held
  by an unrelated listener is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: Lowest port handed out; the top of the range is just under the ephemeral range.
RANGE_START = 20000
FALLBACK_RANGE = (40000, 49999)
STATE_FILE = Path(tempfile.gettempdir()) / "pytrustee-test-ports"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def allocation_range() -> tuple[int, int]:
    """Inclusive `(first, last)` of the ports this allocator uses."""
    low, high = _ephemeral_range()
    if low - 1 - RANGE_START >= 1000:
        return RANGE_START, low - 1
    if 65535 - high >= 1000:
        return high + 1, 65535
    return FALLBACK_RANGE


@contextlib.contextmanager
def _locked_counter() -> Iterator[list[int]]:
    """The shared next-offset counter, read and written back under an exclusive lock."""
    fd = os.open(STATE_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read().strip()
        cell = [int(text) if text.isdigit() else random.randrange(1 << 16)]
        yield cell
        handle.seek(0)
        handle.truncate()
        handle.write(str(cell[0]))
        handle.flush()


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _next_port(counter: list[int], first: int, size: int, width: int) -> int:
    """The first port from the counter on whose block of `width` ports is all bindable."""
    for _ in range(size):
        base = first + counter[0] % size
        counter[0] = (counter[0] + width) % size
        if base + width - 1 < first + size and all(_bindable(port) for port in range(base, base + width)):
            return base
    raise RuntimeError(f"no {width} free TCP port(s) between {first} and {first + size - 1}")


def allocate_ports(count: int = 1, *, consecutive: bool = False) -> list[int]:
    """`count` distinct ports, each bindable now and not handed out recently.

    With `consecutive`, the ports are `P, P+1, ...` (swtpm wants its control
    channel at the server port + 1).
    """
    first, last = allocation_range()
    size = last - first + 1
    with _locked_counter() as counter:
        if consecutive:
            base = _next_port(counter, first, size, count)
            return list(range(base, base + count))
        return [_next_port(counter, first, size, 1) for _ in range(count)]
