"""What both pin executables share: reading stdin, writing results, the one-line error."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from clevis_trustee.jwe import MAX_JWE_BYTES, PinError
from trustee_common.errors import TrusteeError

logger = logging.getLogger(__name__)


def read_stdin(limit: int = MAX_JWE_BYTES) -> bytes:
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise PinError(f"input is larger than {limit} bytes")
    return data


def stdin_is_terminal() -> bool:
    return os.isatty(sys.stdin.fileno())


def run(prog: str, body: Callable[[], bytes]) -> int:
    """Run `body`; its bytes go to stdout (exit 0), a refusal is one line on stderr (exit 1)."""
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        output = body()
    except TrusteeError as exc:
        print(f"{prog}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()
    return 0
