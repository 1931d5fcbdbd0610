"""The ocicrypt key-provider messages of an UnWrapKey call (guest-components.md 8).

ocicrypt (Go, via skopeo/containerd) and ocicrypt-rs (image-rs) call a key
provider named `attestation-agent` (the CDH serves it) with the bytes of
`KeyProviderKeyWrapProtocolInput`:

    {"op": "keyunwrap", "keywrapparams": {...},
     "keyunwrapparams": {"dc": {...}, "annotation": "<std b64 of the AnnotationPacket JSON>"}}

and read back `KeyProviderKeyWrapProtocolOutput`:

    {"keyunwrapresults": {"optsdata": [<the private options' bytes as integers>]}}

ocicrypt-rs reads `optsdata` as a Rust `Vec<u8>`, which accepts only an
integer array, so `unwrap_response` writes one; Go writes `[]byte` as a
base64 string, which `parse_unwrap_response` also accepts. `dc` and
`keywrapparams` are ignored, as upstream's CDH does. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from trustee_common.b64 import std_decode, std_encode
from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError, clip_repr
from trustee_common.ocicrypt.packet import MAX_PACKET_BYTES, AnnotationPacket

#: The request carries the annotation twice-encoded plus the decrypt config (which may list keys): generous.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_MESSAGE_DEPTH = 16
#: Largest optsdata accepted in a response (private options are about 200 bytes).
MAX_OPTSDATA_BYTES = 64 * 1024


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedRequestError(f"{what}: not a JSON object")
    return value


def parse_unwrap_request(data: bytes) -> AnnotationPacket:
    """The AnnotationPacket an UnWrapKey request asks to open."""
    what = "keyprovider request"
    doc = _object(loads_json(data, what, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_MESSAGE_DEPTH), what)
    if doc.get("op") != "keyunwrap":
        raise MalformedRequestError(f"{what}: op {clip_repr(doc.get('op'))} is not supported (only 'keyunwrap')")
    params = _object(doc.get("keyunwrapparams"), f"{what} `keyunwrapparams`")
    annotation = params.get("annotation")
    if not isinstance(annotation, str) or not annotation:
        raise MalformedRequestError(f"{what}: `keyunwrapparams.annotation` missing or not a base64 string")
    if len(annotation) > 2 * MAX_PACKET_BYTES:
        raise MalformedRequestError(f"{what}: annotation larger than {2 * MAX_PACKET_BYTES} bytes")
    return AnnotationPacket.from_json(std_decode(annotation, f"{what} `keyunwrapparams.annotation`"))


def unwrap_request(packet: AnnotationPacket) -> bytes:
    """The UnWrapKey request bytes ocicrypt sends for `packet` (for clients and tests)."""
    return json.dumps({"op": "keyunwrap", "keywrapparams": {"ec": None, "optsdata": None},
                       "keyunwrapparams": {"dc": {"Parameters": {}}, "annotation": std_encode(packet.to_json())}}).encode()


def unwrap_response(plbco: bytes) -> bytes:
    """The UnWrapKey response bytes carrying `plbco` as an integer array."""
    return json.dumps({"keyunwrapresults": {"optsdata": list(plbco)}}, separators=(",", ":")).encode()


def parse_unwrap_response(data: bytes) -> bytes:
    """The private options an UnWrapKey response carries (integer array, or Go's base64 string)."""
    what = "keyprovider response"
    doc = _object(loads_json(data, what, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_MESSAGE_DEPTH), what)
    results = _object(doc.get("keyunwrapresults"), f"{what} `keyunwrapresults`")
    opts = results.get("optsdata")
    if isinstance(opts, str):
        raw = std_decode(opts, f"{what} `optsdata`")
    elif isinstance(opts, list) and all(type(b) is int and 0 <= b < 256 for b in opts):
        raw = bytes(opts)
    else:
        raise MalformedRequestError(f"{what}: `optsdata` is neither an array of bytes nor a base64 string")
    if not raw or len(raw) > MAX_OPTSDATA_BYTES:
        raise MalformedRequestError(f"{what}: `optsdata` is empty or larger than {MAX_OPTSDATA_BYTES} bytes")
    return raw
