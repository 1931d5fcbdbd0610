"""The ocicrypt key-provider UnWrapKey messages: request parsing, response shape (integer-array optsdata)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustee_common.errors import MalformedRequestError, TrusteeError
from trustee_common.ocicrypt import (
    AnnotationPacket,
    parse_unwrap_request,
    parse_unwrap_response,
    unwrap_private_options,
    unwrap_request,
    unwrap_response,
    wrap_private_options,
)

KEK = bytes(range(32))
KID = "kbs:///default/image-kek/test"
PLBCO = b'{"symkey":"AAAA","digest":"sha256:00","cipheroptions":{"nonce":"AAAA"}}'


def request_for(packet: AnnotationPacket) -> bytes:
    """The request as ocicrypt builds it (guest-components.md 8): the decoded annotation re-encoded as std base64."""
    return json.dumps({"op": "keyunwrap", "keywrapparams": {"ec": None, "optsdata": None},
                       "keyunwrapparams": {"dc": {"Parameters": {"attestation-agent": ["c2FtcGxl"]}},
                                           "annotation": base64.b64encode(packet.to_json()).decode()}}).encode()


def test_request_from_ocicrypt_unwraps_and_answers_with_an_integer_array() -> None:
    packet = wrap_private_options(PLBCO, KEK, KID)
    parsed = parse_unwrap_request(request_for(packet))
    assert parsed == packet
    response = unwrap_response(unwrap_private_options(parsed, KEK))
    doc = json.loads(response)
    assert doc == {"keyunwrapresults": {"optsdata": list(PLBCO)}}
    assert all(isinstance(b, int) for b in doc["keyunwrapresults"]["optsdata"])
    assert parse_unwrap_response(response) == PLBCO


def test_our_request_builder_matches_the_parser() -> None:
    packet = wrap_private_options(PLBCO, KEK, KID)
    assert parse_unwrap_request(unwrap_request(packet)) == packet
    assert json.loads(unwrap_request(packet))["op"] == "keyunwrap"


def test_go_style_base64_optsdata_is_accepted() -> None:
    response = json.dumps({"keyunwrapresults": {"optsdata": base64.b64encode(PLBCO).decode()}}).encode()
    assert parse_unwrap_response(response) == PLBCO


@pytest.mark.parametrize(("body", "message"), [
    ({"op": "keywrap", "keyunwrapparams": {}}, "op 'keywrap' is not supported"),
    ({"op": "keyunwrap"}, "`keyunwrapparams`: not a JSON object"),
    ({"op": "keyunwrap", "keyunwrapparams": {"annotation": None}}, "annotation` missing"),
    ({"op": "keyunwrap", "keyunwrapparams": {"annotation": "%%%"}}, "not standard"),
    ({"op": "keyunwrap", "keyunwrapparams": {"annotation": base64.b64encode(b"nope").decode()}}, "annotation packet: not JSON"),
])
def test_malformed_requests_are_named(body: object, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        parse_unwrap_request(json.dumps(body).encode())


@pytest.mark.parametrize(("body", "message"), [
    ({}, "`keyunwrapresults`: not a JSON object"),
    ({"keyunwrapresults": {"optsdata": [1, 256]}}, "neither an array of bytes"),
    ({"keyunwrapresults": {"optsdata": [True]}}, "neither an array of bytes"),
    ({"keyunwrapresults": {"optsdata": []}}, "empty"),
])
def test_malformed_responses_are_named(body: object, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        parse_unwrap_response(json.dumps(body).encode())


def test_requests_are_bounded() -> None:
    with pytest.raises(MalformedRequestError, match="larger than"):
        parse_unwrap_request(b" " * (1024 * 1024 + 1))
    with pytest.raises(MalformedRequestError, match="nested deeper"):
        parse_unwrap_request(b"[" * 1000)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_raise_only_trustee_errors(data: bytes) -> None:
    for parse in (parse_unwrap_request, parse_unwrap_response):
        try:
            parse(data)
        except TrusteeError:
            pass
