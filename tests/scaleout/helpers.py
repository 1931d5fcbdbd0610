"""Helpers for the scale-out tests: token claims, table row counts, self-checking payloads."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import psycopg

from trustee_common.b64 import url_decode

HEADER = struct.Struct(">I32s")


def claims(token: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(url_decode(token.split(".")[1], "payload"))
    return body


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608 - test-chosen name
    assert row is not None
    return int(row[0])


def framed(body: bytes) -> bytes:
    """`length (4 bytes) | sha256(body) | body`: a value that proves it is whole."""
    return HEADER.pack(len(body), hashlib.sha256(body).digest()) + body


def unframe(value: bytes) -> bytes:
    """The body of a `framed` value; AssertionError when it is cut or altered."""
    assert len(value) >= HEADER.size, f"short value ({len(value)} bytes)"
    length, digest = HEADER.unpack_from(value)
    body = value[HEADER.size:]
    assert len(body) == length, f"value cut: {len(body)} of {length} bytes"
    assert hashlib.sha256(body).digest() == digest, "value altered"
    return body


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
