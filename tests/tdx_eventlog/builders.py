"""Build small TCG event logs byte by byte for tests."""

from __future__ import annotations

import hashlib
import struct

SHA384 = 0x000C
SHA256 = 0x000B


def spec_id_header(algorithms: list[tuple[int, int]], vendor: bytes = b"") -> bytes:
    """The legacy-format EV_NO_ACTION event carrying TCG_EfiSpecIdEvent."""
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algorithms))
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
    body += bytes([len(vendor)]) + vendor
    return struct.pack("<II", 1, 3) + bytes(20) + struct.pack("<I", len(body)) + body


def event2(mr_index: int, event_type: int, data: bytes, digests: list[tuple[int, bytes]] | None = None) -> bytes:
    if digests is None:
        digests = [(SHA384, hashlib.sha384(data).digest())]
    out = struct.pack("<III", mr_index, event_type, len(digests))
    out += b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    return out + struct.pack("<I", len(data)) + data


def legacy_event(pcr: int, event_type: int, data: bytes) -> bytes:
    return struct.pack("<II", pcr, event_type) + hashlib.sha1(data).digest() + struct.pack("<I", len(data)) + data  # noqa: S324


def agile_log(*events: bytes) -> bytes:
    return spec_id_header([(SHA384, 48)]) + b"".join(events) + b"\xff" * 8
