"""Strict base64 flavours: each decoder accepts only its own."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustee_common.b64 import std_decode, std_encode, url_decode, url_encode
from trustee_common.errors import MalformedRequestError


@given(st.binary(max_size=200))
def test_round_trips(data: bytes) -> None:
    assert std_decode(std_encode(data), "f") == data
    assert url_decode(url_encode(data), "f") == data


@pytest.mark.parametrize("text", ["YQ", "YQ=", "a b=", "YQ==YQ==", "-_-_"])
def test_std_rejects_unpadded_or_foreign(text: str) -> None:
    with pytest.raises(MalformedRequestError, match="field"):
        std_decode(text, "field")


@pytest.mark.parametrize("text", ["YQ==", "a+b/", "Y", "YQ=="])
def test_url_rejects_padding_and_std_alphabet(text: str) -> None:
    with pytest.raises(MalformedRequestError, match="policy"):
        url_decode(text, "policy")


@given(st.text(max_size=50))
def test_decoders_raise_only_our_error(text: str) -> None:
    for decode in (std_decode, url_decode):
        try:
            decode(text, "f")
        except MalformedRequestError:
            pass
