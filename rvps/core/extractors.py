"""Extractors: turn a message payload into `{name: value}`.

Only `sample` exists so far (trustee-server.md 7.3): the payload is a JSON
object and each key is one reference value, stored verbatim. `swid` and
`corim` are upstream extractors not implemented here; asking for them is
an `InvalidReferenceValueError` naming the type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trustee_common.bounded import loads_json
from trustee_common.errors import InvalidReferenceValueError

Extractor = Callable[[bytes], dict[str, Any]]


def sample_extractor(payload: bytes) -> dict[str, Any]:
    values = loads_json(payload, "payload of a sample message", error=InvalidReferenceValueError)
    if not isinstance(values, dict):
        raise InvalidReferenceValueError("payload of a sample message must be a JSON object {name: value}")
    return values


EXTRACTORS: dict[str, Extractor] = {"sample": sample_extractor}


def extractor_for(kind: str) -> Extractor:
    try:
        return EXTRACTORS[kind]
    except KeyError:
        raise InvalidReferenceValueError(
            f"unknown reference value message type {kind!r} (supported: {', '.join(sorted(EXTRACTORS))})"
        ) from None
