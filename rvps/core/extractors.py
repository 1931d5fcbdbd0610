"""Extractors: turn a message payload into `{name: value}`.

Upstream's three (trustee-server.md 7.3), always all on: `sample` (the
payload is a JSON object and each key is one reference value, stored
verbatim), `swid` (`rvps.core.swid`: SWID/TCG RIM XML) and `corim`
(`rvps.core.corim`: CoMIDs in a CBOR CoRIM). Neither checks a signature,
as upstream. An unknown type is an `InvalidReferenceValueError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rvps.core.corim import corim_extractor
from rvps.core.swid import swid_extractor
from trustee_common.bounded import loads_json
from trustee_common.config import ConfigTable
from trustee_common.errors import InvalidReferenceValueError

Extractor = Callable[[bytes], dict[str, Any]]


def sample_extractor(payload: bytes) -> dict[str, Any]:
    values = loads_json(payload, "payload of a sample message", error=InvalidReferenceValueError)
    if not isinstance(values, dict):
        raise InvalidReferenceValueError("payload of a sample message must be a JSON object {name: value}")
    return values


EXTRACTORS: dict[str, Extractor] = {"sample": sample_extractor, "swid": swid_extractor, "corim": corim_extractor}


def extractor_for(kind: str) -> Extractor:
    try:
        return EXTRACTORS[kind]
    except KeyError:
        raise InvalidReferenceValueError(
            f"unknown reference value message type {kind!r} (supported: {', '.join(sorted(EXTRACTORS))})"
        ) from None


def check_extractors_table(table: ConfigTable) -> None:
    """Upstream's optional `extractors` config table: `swid_extractor = {}` (it has no options) is
    accepted and changes nothing, since every extractor is always on here; any other key is an error."""
    table.table("swid_extractor").finish()
    table.finish()
