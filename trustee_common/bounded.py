"""Bounded JSON and TOML parsing for every input a client, guest or admin controls.

The standard parsers recurse once per nesting level: deeply nested input
raises `RecursionError` (a 500 before this module existed), and a
moderately deep value that parses still breaks later code that recurses
(canonical JSON, Rego input, `json.dumps`). `loads_json` and `loads_toml`
refuse, before or right after parsing:

- input larger than `max_bytes`;
- nesting deeper than `max_depth` arrays/objects (tables for TOML);
- in JSON, the non-standard `NaN`, `Infinity`, `-Infinity` literals and
  numbers that overflow to an infinite float (`1e400`).

Every refusal is the given `TrusteeError` class (default
`MalformedRequestError`) naming `what`. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from itertools import accumulate
from typing import Any

from trustee_common.errors import MalformedRequestError, TrusteeError

#: Nesting any of our documents needs is below 20; 64 leaves room for policies' data.
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """The deepest array/object nesting of JSON `text`, without recursion (strings are skipped)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def value_depth(value: object) -> int:
    """The nesting depth of a parsed value (dicts and lists), iteratively."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _text(data: str | bytes, what: str, max_bytes: int, error: type[TrusteeError]) -> str:
    if len(data) > max_bytes:
        raise error(f"{what}: larger than {max_bytes} bytes")
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what}: not UTF-8 text") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


#: One decoder for every call (`json.loads` with hooks builds a new decoder and scanner per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads_json(
    data: str | bytes,
    what: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    error: type[TrusteeError] = MalformedRequestError,
) -> Any:
    """Parse JSON `data` within the bounds; any violation or syntax error is `error`."""
    text = _text(data, what, max_bytes, error)
    # Nesting never exceeds the number of opening brackets: most texts skip the scan.
    if text.count("[") + text.count("{") > max_depth and json_depth(text) > max_depth:
        raise error(f"{what}: nested deeper than {max_depth} levels")
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise error(f"{what}: not JSON text") from None


def loads_toml(
    data: str | bytes,
    what: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    error: type[TrusteeError] = MalformedRequestError,
) -> dict[str, Any]:
    """Parse TOML `data` within the bounds; any violation or syntax error is `error`."""
    text = _text(data, what, max_bytes, error)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what}: not valid TOML: {exc}") from None
    except RecursionError:
        raise error(f"{what}: nested deeper than {max_depth} levels") from None
    if value_depth(document) > max_depth:
        raise error(f"{what}: nested deeper than {max_depth} levels")
    return document
