"""Every test runs each KBS and AS as one process unless it asks for workers (`--workers N`).

`kbs` and `grpc-as` default to one worker per available core
(`trustee_common.workers`); the existing tests exercise the single-process
server, and the tests of several workers pass `--workers` explicitly, which
takes precedence over `TRUSTEE_WORKERS`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRUSTEE_WORKERS", "1")
