"""The `corim` extractor: reference values from the CoMIDs of a CoRIM (CBOR).

What upstream's extractor reads (trustee-server.md 7.3), from the CoRIM
CDDL (draft-ietf-rats-corim):

- leading tags 500 and 502 are unwrapped; then tag 501 (or a bare map) is
  an unsigned CoRIM, tag 18 (or a bare 4-array) a COSE_Sign1 whose payload
  is one. The signature is **not** checked, as upstream.
- `tags` (key 1): tag 506 holds a CoMID (bytes, or a map); untagged bytes
  are tried as a CoMID and skipped if they are not one; others are skipped.
- CoMID `triples` (4) → `reference-triples` (0): `[environment, [measurement...]]`.
  The name is `/`-joined from: class (env key 0) vendor (1) and model (2)
  when text; the measurement's `mkey` (0) when text, unsigned int
  (`claim<n>`) or UUID (tag 37, lower-case hyphenated); `mval` (1) name
  (11) and serial number (8) when text; then `digests` (mval 2: value = the
  list of hex digests) or `raw_bytes` (mval 4 as tag 560: value = hex).

Structure the extractor relies on must have the right types, or the whole
CoRIM is refused; the CBOR itself goes through `loads_cbor` first.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeGuard

from cbor2 import CBORTag

from rvps.core.cbor_bounded import loads_cbor
from trustee_common.errors import InvalidReferenceValueError

OUTER_TAGS = (500, 502)
UNSIGNED_CORIM_TAG = 501
COSE_SIGN1_TAG = 18
COMID_TAG = 506
UUID_TAG = 37
TAGGED_BYTES_TAG = 560
MAX_VALUES = 10_000


Map = Mapping[Any, Any]


def _is_array(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    """cbor2 decodes arrays under a tag as tuples (and maps as frozen mappings)."""
    return isinstance(value, (list, tuple))


def _fail(reason: str) -> InvalidReferenceValueError:
    return InvalidReferenceValueError(f"payload of a corim message: {reason}")


def corim_extractor(payload: bytes) -> dict[str, Any]:
    corim = _unsigned_corim_map(loads_cbor(payload, "payload of a corim message"))
    tags = corim.get(1)
    if not _is_array(tags):
        raise _fail("the CoRIM map has no 'tags' (key 1) array")
    values: dict[str, Any] = {}
    for index, tag in enumerate(tags):
        comid = _comid(tag, index)
        if comid is not None:
            _reference_values(comid, values)
    return values


def _unwrap_outer(item: Any) -> Any:
    while isinstance(item, CBORTag) and item.tag in OUTER_TAGS:
        item = item.value
    return item


def _unsigned_corim_map(item: Any) -> Map:
    item = _unwrap_outer(item)
    if isinstance(item, CBORTag) and item.tag == COSE_SIGN1_TAG:
        item = item.value
    if _is_array(item):
        return _unsigned_corim_map_in_cose(item)
    if isinstance(item, CBORTag):
        if item.tag != UNSIGNED_CORIM_TAG:
            raise _fail(f"CBOR tag {item.tag} is not a CoRIM (expected tag {UNSIGNED_CORIM_TAG} or {COSE_SIGN1_TAG}, "
                        f"optionally inside {' or '.join(map(str, OUTER_TAGS))})")
        item = item.value
    if not isinstance(item, Mapping):
        raise _fail(f"a CoRIM must be a CBOR map, got {type(item).__name__}")
    return item


def _unsigned_corim_map_in_cose(sign1: list[Any] | tuple[Any, ...]) -> Map:
    if len(sign1) != 4:
        raise _fail("a signed CoRIM must be a COSE_Sign1 array of 4 items")
    payload = sign1[2]
    if not isinstance(payload, bytes):
        raise _fail("the COSE_Sign1 payload must be embedded bytes (a detached payload is not supported)")
    inner = _unwrap_outer(loads_cbor(payload, "payload of the signed CoRIM"))
    if isinstance(inner, CBORTag) and inner.tag == UNSIGNED_CORIM_TAG:
        inner = inner.value
    if not isinstance(inner, Mapping):
        raise _fail(f"the COSE_Sign1 payload must be an unsigned CoRIM (tag {UNSIGNED_CORIM_TAG})")
    return inner


def _comid(tag: Any, index: int) -> Map | None:
    """The CoMID map of tags[index], or None when the entry is not a CoMID."""
    if isinstance(tag, CBORTag):
        if tag.tag != COMID_TAG:
            return None
        body = tag.value
        if isinstance(body, bytes):
            body = loads_cbor(body, f"CoMID tags[{index}]")
        if not isinstance(body, Mapping):
            raise _fail(f"tags[{index}]: a CoMID (tag {COMID_TAG}) must hold a CBOR map")
        return body
    if isinstance(tag, bytes):
        try:
            body = loads_cbor(tag, f"tags[{index}]")
        except InvalidReferenceValueError:
            return None
        return body if isinstance(body, Mapping) and isinstance(body.get(4), Mapping) else None
    return None


def _reference_values(comid: Map, values: dict[str, Any]) -> None:
    triples = comid.get(4)
    if not isinstance(triples, Mapping):
        raise _fail("a CoMID has no 'triples' (key 4) map")
    reference_triples = triples.get(0, [])
    if not _is_array(reference_triples):
        raise _fail("'reference-triples' must be an array")
    for triple in reference_triples:
        if not _is_array(triple) or len(triple) != 2 or not isinstance(triple[0], Mapping) or not _is_array(triple[1]):
            raise _fail("a reference triple must be [environment-map, [measurement-map, ...]]")
        base = _environment_path(triple[0])
        for claim in triple[1]:
            _claim_values(base, claim, values)
            if len(values) > MAX_VALUES:
                raise _fail(f"more than {MAX_VALUES} reference values")


def _text(mapping: Map, key: int, what: str) -> list[str]:
    value = mapping.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        raise _fail(f"{what} must be text")
    return [value]


def _environment_path(environment: Map) -> list[str]:
    klass = environment.get(0)
    if klass is None:
        return []
    if not isinstance(klass, Mapping):
        raise _fail("an environment's 'class' (key 0) must be a map")
    return _text(klass, 1, "class 'vendor'") + _text(klass, 2, "class 'model'")


def _mkey(mkey: Any) -> list[str]:
    if isinstance(mkey, str):
        return [mkey]
    if isinstance(mkey, int) and not isinstance(mkey, bool) and mkey >= 0:
        return [f"claim{mkey}"]
    if isinstance(mkey, uuid.UUID):
        return [str(mkey)]
    return []  # other measured-element types (OIDs, ...) add nothing, as upstream


def _claim_values(base: list[str], claim: Any, values: dict[str, Any]) -> None:
    if not isinstance(claim, Mapping) or not isinstance(claim.get(1), Mapping):
        raise _fail("a measurement must be a map with an 'mval' (key 1) map")
    mval: Map = claim[1]
    path = base + _mkey(claim.get(0)) + _text(mval, 11, "mval 'name'") + _text(mval, 8, "mval 'serial-number'")
    digests = mval.get(2)
    if digests is not None:
        values["/".join([*path, "digests"])] = [_digest_hex(d) for d in _array(digests, "mval 'digests'")]
    raw = mval.get(4)
    if isinstance(raw, CBORTag) and raw.tag == TAGGED_BYTES_TAG:
        if not isinstance(raw.value, bytes):
            raise _fail(f"a raw value (tag {TAGGED_BYTES_TAG}) must hold bytes")
        values["/".join([*path, "raw_bytes"])] = raw.value.hex()


def _array(value: Any, what: str) -> list[Any] | tuple[Any, ...]:
    if not _is_array(value):
        raise _fail(f"{what} must be an array")
    return value


def _digest_hex(digest: Any) -> str:
    if not _is_array(digest) or len(digest) != 2 or not isinstance(digest[1], bytes):
        raise _fail("a digest must be [algorithm, bytes]")
    if not (isinstance(digest[0], (int, str)) and not isinstance(digest[0], bool)):
        raise _fail("a digest algorithm must be an integer or text")
    return digest[1].hex()
