"""The stored reference-value record and its time rules.

A record is `{"version":"0.1.0","name","expiration","value"}` (upstream's
layout, trustee-server.md 7.4), kept in namespace `reference_value` under
key `storage_key(name)` (the name itself when it is a valid storage key). Unlike upstream, expiration is enforced: a record is live only
while `now < expiration`. Times are RFC 3339, stored in UTC to the second.
This module does no I/O; `now` is always passed in.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from trustee_common.errors import InvalidReferenceValueError, MalformedRequestError, StorageError, clip_repr
from trustee_common.storage.base import validate_key

RECORD_VERSION = "0.1.0"
NAMESPACE = "reference_value"
DEFAULT_LIFETIME_MONTHS = 12
MAX_NAME_BYTES = 1024
#: Keys of names that are not storage keys themselves (see `storage_key`); no plain name starts so.
HASHED_KEY_PREFIX = "_rvps-sha256/"

#: Expirations must be storable everywhere (epoch seconds, RFC 3339 with a 4-digit year).
MIN_YEAR, MAX_YEAR = 1970, 9999
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def parse_time(text: object, field: str) -> datetime.datetime:
    """An RFC 3339 date-time with offset, as an aware UTC datetime (whole seconds)."""
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise InvalidReferenceValueError(f"{field}: {text!r} is not an RFC 3339 date-time with a time zone")
    try:
        parsed = datetime.datetime.fromisoformat(text.upper().replace(" ", "T")).astimezone(datetime.UTC)
    except (ValueError, OverflowError):
        raise InvalidReferenceValueError(f"{field}: {text!r} is not a valid date-time in {MIN_YEAR}..{MAX_YEAR}") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise InvalidReferenceValueError(f"{field}: {text!r} is outside the years {MIN_YEAR}..{MAX_YEAR}")
    return parsed.replace(microsecond=0)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_months(value: datetime.datetime, months: int) -> datetime.datetime:
    """Calendar months later, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def default_expiration(now: datetime.datetime) -> datetime.datetime:
    """Upstream's default: registration time + 12 months."""
    return add_months(now.astimezone(datetime.UTC).replace(microsecond=0), DEFAULT_LIFETIME_MONTHS)


def check_name(name: object, field: str = "reference value name") -> str:
    """Any printable text of 1-`MAX_NAME_BYTES` UTF-8 bytes: upstream's names are arbitrary strings
    (`rvps:///ns/...:tag` URIs, CoRIM paths with spaces, ...). Control and other non-printable
    characters are refused so that every name is safe to log and to show."""
    if not isinstance(name, str):
        raise InvalidReferenceValueError(f"{field}: must be a string")
    if not name or len(name) > MAX_NAME_BYTES or len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise InvalidReferenceValueError(f"{field} {clip_repr(name)} is not allowed: it must be 1-{MAX_NAME_BYTES} bytes of UTF-8")
    if not name.isprintable():
        raise InvalidReferenceValueError(
            f"{field} {clip_repr(name)} is not allowed: only printable characters (and the ASCII space)"
        )
    return name


def storage_key(name: str) -> str:
    """The store key of a (checked) name, one-to-one.

    A name that is already a valid storage key is its own key, as before (so
    existing stores keep working); any other name, or one starting with
    `HASHED_KEY_PREFIX`, is stored under that prefix + the hex SHA-256 of its
    UTF-8 text. Keys are therefore always in the storage alphabet and of
    fixed length, whatever the name holds ('/', ':', '..', spaces); the
    record keeps the name itself, and reads check that it matches.
    """
    if not name.startswith(HASHED_KEY_PREFIX):
        try:
            validate_key(NAMESPACE, name)
        except MalformedRequestError:
            pass
        else:
            return name
    return HASHED_KEY_PREFIX + hashlib.sha256(name.encode("utf-8")).hexdigest()


def value_json(value: Any) -> str:
    """Compact JSON text of a value (what Query returns)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    name: str
    value: Any
    expiration: datetime.datetime

    def is_live(self, now: datetime.datetime) -> bool:
        return now < self.expiration

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "name": self.name, "expiration": format_time(self.expiration), "value": self.value}

    def to_bytes(self) -> bytes:
        return value_json(self.to_json()).encode()

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> ReferenceValue:
        """Decode the record stored under `key`; a corrupt one (or one whose name does not map
        to `key`) is a `StorageError` naming the key."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("version") != RECORD_VERSION:
                raise ValueError("not a version 0.1.0 record")
            name = check_name(obj["name"])
            if storage_key(name) != key:
                raise ValueError(f"its name {clip_repr(name)} belongs under another key")
            expiration = parse_time(obj["expiration"], "expiration")
            return cls(name, obj["value"], expiration)
        except (ValueError, KeyError, InvalidReferenceValueError) as exc:
            raise StorageError(f"stored reference value {key!r} is corrupt: {exc}") from None
