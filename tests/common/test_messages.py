"""KBS 0.4.0 messages: upstream guests' shapes parse, everything else is named and refused."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustee_common.errors import MalformedRequestError, TrusteeError
from trustee_common.jose import TeeKeyPair
from trustee_common.messages import Attestation, Request

KEY = TeeKeyPair.generate().public_jwk()


def attestation(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": KEY},
        "tee-evidence": {"primary_evidence": {"svn": "1"}, "additional_evidence": ""},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("extra", ["", {}, {"supported-hash-algorithms": ["sha384"]}])
def test_request_accepts_what_upstream_guests_send(extra: object) -> None:
    request = Request.from_json({"version": "0.4.0", "tee": "sample", "extra-params": extra})
    assert request.tee == "sample"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"tee": "sample", "extra-params": ""}, "version"),
        ({"version": "0.1.1", "tee": "sample", "extra-params": ""}, "mismatch"),
        ({"version": "0.4.0", "tee": "nope", "extra-params": ""}, "unknown TEE"),
        ({"version": "0.4.0", "tee": "sample"}, "extra-params"),
        ({"version": "0.4.0", "tee": "sample", "extra-params": 3}, "extra-params"),
    ],
)
def test_bad_requests_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        Request.from_json(body)


def test_attestation_accepts_null_init_data_and_devices() -> None:
    devices = json.dumps({"sampledevice": {"svn": "2"}})
    parsed = Attestation.from_json(
        attestation(**{"init-data": None, "tee-evidence": {"primary_evidence": {}, "additional_evidence": devices}})
    )
    assert parsed.init_data is None
    assert parsed.tee_evidence.devices() == {"sampledevice": {"svn": "2"}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"init-data": {"format": "json", "body": "{}"}}, "only toml"),
        ({"runtime-data": {"nonce": "x"}}, "tee-pubkey"),
        ({"tee-evidence": {"primary_evidence": {}}}, "additional_evidence"),
        ({"tee-evidence": {"primary_evidence": {}, "additional_evidence": "{bad"}}, "not JSON"),
        ({"tee-evidence": {"primary_evidence": {}, "additional_evidence": '{"gpu9": {}}'}}, "unknown TEE"),
    ],
)
def test_bad_attestations_name_the_problem(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        Attestation.from_json(attestation(**overrides))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)))
def test_parsers_raise_only_our_errors(value: object) -> None:
    for parse in (Request.from_json, Attestation.from_json):
        try:
            parse(value)
        except TrusteeError:
            pass
