"""A Rego worker process: compiles and evaluates policies for `trustee_common.rego_pool`.

Run as `python -m trustee_common.rego_worker`. Requests and replies are
JSON frames (4-byte big-endian length, then UTF-8 JSON) on stdin/stdout;
fd 1 itself is pointed at /dev/null so that rego-cpp's own printing (compile
errors, `print`) never corrupts the protocol. The environment is emptied
before any policy runs, and the process dies with its parent (Linux
`PR_SET_PDEATHSIG`) or when its stdin closes.

Compiled policies are kept by `PolicySpec.digest` in an LRU bounded by count
and by total policy size; an `eval` for a digest this worker no longer (or
never) compiled answers `missing`, and the pool sends a `load` first.

Requests: `{"op": "load", "spec": {...}}`, `{"op": "eval", "digest", "input"}`,
`{"op": "stats"}`. Replies: `{"ok": true, ...}` (a `load` says whether the policy is
`deterministic`: it uses no built-in of `NONDETERMINISTIC_BUILTINS`) or
`{"ok": false, "variant", "detail"}` (`"variant": "missing"` for an unknown digest).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import struct
import sys
from collections import OrderedDict
from typing import Any, BinaryIO

from trustee_common.errors import TrusteeError
from trustee_common.rego import PolicySpec, RegoPolicy

CACHE_SIZE = 16
CACHE_BYTES = 8 << 20
_HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


class PolicyCache:
    """Compiled policies by digest, bounded by count and by total text size."""

    def __init__(self, size: int = CACHE_SIZE, max_bytes: int = CACHE_BYTES) -> None:
        self._entries: OrderedDict[str, RegoPolicy] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return sum(p.spec.size for p in self._entries.values())

    def get(self, digest: str) -> RegoPolicy | None:
        found = self._entries.get(digest)
        if found is not None:
            self._entries.move_to_end(digest)
        return found

    def load(self, spec: PolicySpec) -> RegoPolicy:
        found = self.get(spec.digest)
        if found is not None:
            return found
        policy = RegoPolicy.from_spec(spec)
        self._entries[spec.digest] = policy
        while len(self._entries) > 1 and (len(self._entries) > self._size or self.total_bytes > self._max_bytes):
            self._entries.popitem(last=False)
        return policy


def handle(cache: PolicyCache, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    try:
        if op == "load":
            spec = PolicySpec.from_json(request["spec"])
            fresh = cache.get(spec.digest) is None
            return {"ok": True, "compiled": fresh, "deterministic": cache.load(spec).deterministic}
        if op == "eval":
            policy = cache.get(str(request["digest"]))
            if policy is None:
                return {"ok": False, "variant": "missing", "detail": "policy not compiled in this worker"}
            return {"ok": True, "result": policy.evaluate(request["input"], request.get("data"))}
        if op == "stats":
            return {"ok": True, "compiled": len(cache), "bytes": cache.total_bytes}
    except TrusteeError as exc:
        return {"ok": False, "variant": exc.variant, "detail": exc.detail}
    return {"ok": False, "variant": "InternalError", "detail": f"unknown worker request {op!r}"}


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    body = stream.read(length)
    return body if len(body) == length else None


def frame(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return _HEADER.pack(len(body)) + body


def _isolate() -> BinaryIO:
    """Empty the environment, die with the parent, and move the protocol off fd 1."""
    os.environ.clear()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return out


def main() -> None:
    out = _isolate()
    stdin = sys.stdin.buffer
    cache = PolicyCache()
    while True:
        body = read_frame(stdin)
        if body is None:
            return
        out.write(frame(handle(cache, json.loads(body))))


if __name__ == "__main__":
    main()
