"""Bounded CBOR decoding for payloads an admin (or anyone holding an admin token) sends.

`cbor2` decodes well-formed input, but on its own it accepts trailing
bytes after the first item, nests as deep as the input asks and gives some
tags special meaning (28/29 build shared, even cyclic, references; 25/256
string references; 35 compiles a regular expression; 36 parses MIME).
`loads_cbor` first walks the item heads without building anything
(iteratively, so no recursion) and refuses:

- input larger than `max_bytes`;
- nesting deeper than `max_depth` (arrays, maps and tags each add one);
- more than `max_items` data items;
- truncated input, lengths past the end, reserved or malformed heads,
  indefinite-length strings with foreign chunks, a stray "break";
- any byte after the one top-level item;
- the tags in `REFUSED_TAGS`.

Only then does `cbor2` decode it. Every refusal is
`InvalidReferenceValueError` naming `what`. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import cbor2

from trustee_common.errors import InvalidReferenceValueError

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ITEMS = 200_000
#: Tags whose cbor2 meaning is not plain data (shared/cyclic references, string references, regex, MIME).
REFUSED_TAGS = frozenset({25, 28, 29, 35, 36, 256})

_BREAK = 0xFF
_INDEFINITE = -1


class _Scan:
    """A cursor over CBOR bytes reading one head at a time."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, reason: str) -> InvalidReferenceValueError:
        return InvalidReferenceValueError(f"{self.what} is not valid CBOR: {reason} (at byte {self.pos})")

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise self.fail("truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument); the argument is `_INDEFINITE` for info 31."""
        first = self.take(1)[0]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, info
        if info <= 27:
            return major, info, int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31 and major in (2, 3, 4, 5, 7):
            return major, info, _INDEFINITE
        raise self.fail(f"reserved additional information {info} for major type {major}")

    def skip_string(self, major: int, length: int) -> None:
        if length != _INDEFINITE:
            self.take(length)
            return
        while True:
            if self.pos < len(self.data) and self.data[self.pos] == _BREAK:
                self.pos += 1
                return
            chunk_major, _, chunk_length = self.head()
            if chunk_major != major or chunk_length == _INDEFINITE:
                raise self.fail("an indefinite-length string holds a chunk of another type")
            self.take(chunk_length)


def check_cbor(data: bytes, what: str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
               max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Refuse `data` unless it is exactly one well-formed CBOR item within the bounds."""
    if len(data) > max_bytes:
        raise InvalidReferenceValueError(f"{what} is {len(data)} bytes, above the limit of {max_bytes}")
    scan = _Scan(data, what)
    # Each open container: items still expected (_INDEFINITE until a break); a tag expects 1.
    open_items: list[int] = [1]
    items = 0
    while open_items:
        if open_items[-1] == 0:
            open_items.pop()
            continue
        if open_items[-1] == _INDEFINITE and scan.pos < len(data) and data[scan.pos] == _BREAK:
            scan.pos += 1
            open_items.pop()
            continue
        if open_items[-1] != _INDEFINITE:
            open_items[-1] -= 1
        items += 1
        if items > max_items:
            raise InvalidReferenceValueError(f"{what} holds more than {max_items} CBOR items")
        _one_head(scan, open_items, max_depth)
    if scan.pos != len(data):
        raise scan.fail("bytes after the first CBOR item")


def _one_head(scan: _Scan, open_items: list[int], max_depth: int) -> None:
    major, info, argument = scan.head()
    if major in (2, 3):
        scan.skip_string(major, argument)
        return
    if major in (4, 5, 6):
        if major == 6 and argument in REFUSED_TAGS:
            raise InvalidReferenceValueError(f"{scan.what} uses CBOR tag {argument}, which is not accepted")
        if len(open_items) > max_depth:
            raise InvalidReferenceValueError(f"{scan.what} is nested deeper than {max_depth} levels")
        if major == 6:
            open_items.append(1)
        elif argument == _INDEFINITE:
            open_items.append(_INDEFINITE)
        else:
            open_items.append(argument * (2 if major == 5 else 1))
        return
    if major == 7:
        if argument == _INDEFINITE:
            raise scan.fail("unexpected break")
        if info == 24 and argument < 32:
            raise scan.fail("a two-byte simple value below 32")


def loads_cbor(data: bytes, what: str, **limits: int) -> Any:
    """`check_cbor`, then `cbor2` decoding; any decoding failure is an `InvalidReferenceValueError`."""
    check_cbor(data, what, **limits)
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, LookupError, RecursionError) as exc:
        raise InvalidReferenceValueError(f"{what} is not valid CBOR: {exc}") from None
