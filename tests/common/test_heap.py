"""`settle_heap`: start-up garbage is collected, the survivors leave the collector's view, later garbage is still
collected. Run in a fresh interpreter each, so the test process's own heap is left as it is."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import gc, weakref
    import kbs.server  # a server's start-up heap: the KBS with everything it imports

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    from trustee_common.heap import settle_heap

    before = cycle()
    tracked = len(gc.get_objects())
    frozen = settle_heap()
    assert before() is None, "start-up garbage survived"
    assert frozen > 20_000 and frozen > tracked // 2, (frozen, tracked)
    assert len(gc.get_objects()) < 1_000, len(gc.get_objects())  # a full collection now walks only these
    after = cycle()
    gc.collect()
    assert after() is None, "garbage made after the freeze was not collected"
    print("ok", frozen)
    """
)


def test_settle_heap_freezes_the_start_up_objects_and_still_collects_later_garbage() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
