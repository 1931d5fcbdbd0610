"""Runtime-data binding: RFC 8785 canonical JSON hashed as guest-components does."""

import hashlib

import pytest
import rfc8785

from trustee_common.canonical import HashAlgorithm, canonical_json, device_runtime_data, primary_runtime_data, runtime_data_digest
from trustee_common.errors import MalformedRequestError

# Worked example from guest-components.md 3.8 (P-256 generator point as the TEE key).
NONCE = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
TEE_PUBKEY = {
    "kty": "EC",
    "crv": "P-256",
    "alg": "ECDH-ES+A256KW",
    "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
    "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
}


def test_primary_digest_matches_guest_components_vector() -> None:
    digest = runtime_data_digest(primary_runtime_data(NONCE, TEE_PUBKEY, ""))
    assert digest.hex() == (
        "b130e21e57266e6616cd7f62c0e3b38a2febdbbe2a2c443b6b600696bf6fee74faa2f43a14ece9eae260d36667c18d7a"
    )


def test_device_digest_matches_guest_components_vector() -> None:
    digest = runtime_data_digest(device_runtime_data(NONCE, TEE_PUBKEY))
    assert digest.hex() == (
        "2de96e9b70d9e6857742ac66832b9b9dc1b1e42ee0853e3f8babcc2274e387ab2cde469c0def3e42929ef356507d72b6"
    )


def test_canonical_form_sorts_keys_and_drops_whitespace() -> None:
    text = canonical_json(primary_runtime_data(NONCE, TEE_PUBKEY, "")).decode()
    assert text.startswith('{"additional-evidence":"","nonce":"MDEy')
    assert '"tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":' in text
    assert " " not in text


def test_canonical_numbers_follow_rfc8785() -> None:
    assert canonical_json({"b": 1.0, "a": 1e21}) == b'{"a":1e+21,"b":1}'


@pytest.mark.parametrize("name", ["sha256", "SHA384", "sha512"])
def test_hash_algorithm_names(name: str) -> None:
    algorithm = HashAlgorithm.parse(name)
    assert algorithm.digest(b"x") == hashlib.new(name.lower(), b"x").digest()


def test_empty_hash_algorithm_means_sha384() -> None:
    assert HashAlgorithm.parse("") is HashAlgorithm.SHA384


def test_unknown_hash_algorithm_is_refused() -> None:
    with pytest.raises(MalformedRequestError, match="md5"):
        HashAlgorithm.parse("md5")


@pytest.mark.parametrize("value", [
    {"nonce": "n", "tee-pubkey": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}, "additional-evidence": ""},
    {"b": [1, -2, True, False, None, {"z": "\x00\x1f\x7f\"\\\b\f\n\r\t\u2028é😀"}], "a": {}, "": []},
    {"big": 2**53 - 1, "small": -(2**53 - 1)},
    {"é": 1, "z": 2, "\U0001f600": 3, "\ue000": 4},  # non-ASCII keys: UTF-16 order, through rfc8785
    {"f": 1.5, "g": 1e21, "h": -0.0},
])
def test_fast_path_is_byte_for_byte_rfc8785(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value", [{"a": 2**53}, {"a": "\ud800"}])
def test_values_jcs_cannot_hold_are_still_refused(value: object) -> None:
    with pytest.raises(MalformedRequestError):
        canonical_json(value)
