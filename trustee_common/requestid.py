"""The request id that ties one client request's log lines together across KBS, AS and RVPS.

The KBS assigns an id to every HTTP request (or keeps a well-formed
incoming `X-Request-Id`), returns it in the `X-Request-Id` response header,
and sends it to the AS in the gRPC metadata key `x-request-id`; the AS
forwards it to the RVPS the same way. Each service keeps the id of the
request it is serving in a context variable, which the log formatters
(`trustee_common.logsetup`) and the audit log read. Pure: no transport here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

#: HTTP header (KBS request and response).
HEADER = "X-Request-Id"
#: gRPC metadata key (lower case, as gRPC requires).
METADATA_KEY = "x-request-id"
MAX_LENGTH = 64
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

REQUEST_ID: ContextVar[str | None] = ContextVar("trustee_request_id", default=None)


def new_request_id() -> str:
    """A fresh random id (32 hex characters)."""
    return secrets.token_hex(16)


def accept_request_id(incoming: str | None) -> str:
    """`incoming` when it is 1-64 characters of `[A-Za-z0-9._:-]`, else a fresh id.

    A malformed id is replaced rather than refused: the id is only for
    correlation, and a client must not be able to inject log syntax with it.
    """
    if incoming is not None and _VALID.fullmatch(incoming):
        return incoming
    return new_request_id()


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the current request id (empty outside a request)."""
    rid = REQUEST_ID.get()
    return () if rid is None else ((METADATA_KEY, rid),)


def from_metadata(metadata: Iterable[Any] | None) -> str | None:
    """The well-formed request id in gRPC invocation metadata (`(key, value)` pairs), else None."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and _VALID.fullmatch(value):
            return value
    return None
