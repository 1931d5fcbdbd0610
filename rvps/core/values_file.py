"""The start-up reference-value file (`reference_values_path`).

A JSON array of `{"name": str, "value": any, "expiration"?: RFC 3339}`;
entries without `expiration` expire 12 months after `now`. Any bad entry
fails the whole file with a message naming the file and the entry index.
Pure: the caller reads the file.
"""

from __future__ import annotations

import datetime

from rvps.core.record import ReferenceValue, check_name, default_expiration, parse_time
from trustee_common.bounded import loads_json
from trustee_common.errors import ConfigError, InvalidReferenceValueError

_KEYS = {"name", "value", "expiration"}


def parse_values_file(text: str, source: str, now: datetime.datetime) -> list[ReferenceValue]:
    try:
        entries = loads_json(text, "content", error=ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"reference values file {source} is not valid JSON ({exc.detail})") from None
    if not isinstance(entries, list):
        raise ConfigError(f"reference values file {source} must hold a JSON array")
    return [_entry(entry, f"reference values file {source}, entry {i}", now) for i, entry in enumerate(entries)]


def _entry(entry: object, where: str, now: datetime.datetime) -> ReferenceValue:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if "value" not in entry:
        raise ConfigError(f"{where}: missing field 'value'")
    try:
        name = check_name(entry.get("name"), "name")
        expiration = parse_time(entry["expiration"], "expiration") if "expiration" in entry else default_expiration(now)
    except InvalidReferenceValueError as exc:
        raise ConfigError(f"{where}: {exc.detail}") from None
    return ReferenceValue(name, entry["value"], expiration)
