"""Registration messages: `{"version":"0.1.0","type","payload"[,"expiration"]}`.

`payload` is standard padded base64 (trustee-server.md 7.2). The optional
`expiration` (RFC 3339) is an extension of this project; without it every
record expires 12 months after `now`. `records_from_message` validates the
whole message and every name before returning anything, so the caller can
store all records or none. Pure: text and `now` in, records out.
"""

from __future__ import annotations

import datetime

from rvps.core.extractors import extractor_for
from rvps.core.record import ReferenceValue, check_name, default_expiration, parse_time
from trustee_common.b64 import std_decode
from trustee_common.bounded import loads_json
from trustee_common.errors import InvalidReferenceValueError, MalformedRequestError

MESSAGE_VERSION = "0.1.0"
_KEYS = {"version", "type", "payload", "expiration"}


def records_from_message(text: str, now: datetime.datetime) -> list[ReferenceValue]:
    message = loads_json(text, "message", error=InvalidReferenceValueError)
    if not isinstance(message, dict):
        raise InvalidReferenceValueError("message must be a JSON object")
    unknown = sorted(set(message) - _KEYS)
    if unknown:
        raise InvalidReferenceValueError(f"message has unknown field(s): {', '.join(unknown)}")
    version = message.get("version", MESSAGE_VERSION)
    if version != MESSAGE_VERSION:
        raise InvalidReferenceValueError(f"message version {version!r} is not supported (expected {MESSAGE_VERSION!r})")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidReferenceValueError("message field 'type' is missing or not a string")
    extractor = extractor_for(kind)
    payload = message.get("payload")
    if not isinstance(payload, str):
        raise InvalidReferenceValueError("message field 'payload' is missing or not a string")
    try:
        raw = std_decode(payload, "payload")
    except MalformedRequestError as exc:
        raise InvalidReferenceValueError(exc.detail) from None
    expiration = default_expiration(now) if "expiration" not in message else parse_time(message["expiration"], "expiration")
    values = extractor(raw)
    if not values:
        raise InvalidReferenceValueError("message payload holds no reference values")
    return [ReferenceValue(check_name(name), value, expiration) for name, value in values.items()]
