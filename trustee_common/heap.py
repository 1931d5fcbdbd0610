"""The garbage collector of a long-running server: start-up objects leave the collector's view.

A server process holds some 50,000 to 80,000 objects from start-up for as long
as it runs: modules, config, compiled policies, keys, certificate chains. The
cyclic collector's full (generation 2) collections walk all of them, and under
load they come every few seconds, each pausing the event loop (and every request
on it) for 60 to 80 ms on the benchmark machine: more than a whole flow's
latency budget. `settle_heap`, called once a server listens, collects the
start-up garbage and moves the survivors to the permanent generation
(`gc.freeze`), so later collections walk only what serving created.

Frozen objects are never collected: a start-up object that becomes cyclic
garbage later stays in memory. Start-up objects live as long as the process,
so that costs nothing in practice; objects made while serving are collected
as before.
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Collect, then freeze what is left (once a server is ready to serve); the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
