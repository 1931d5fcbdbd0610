"""JWE envelopes: our encryption opens with an independent JOSE library (joserfc)."""

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwe as rfc_jwe
from joserfc.jwk import ECKey, RSAKey

from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError
from trustee_common.jose import KEY_ALGORITHMS, TeeKeyPair, TeePubKey

SECRET = b"the disk key \x00\xff"


def _open_with_joserfc(pair: TeeKeyPair, envelope: dict[str, str]) -> bytes:
    pem = pair.to_pem()
    key: Any = RSAKey.import_key(pem) if b"RSA" in pem else ECKey.import_key(pem)
    registry = rfc_jwe.JWERegistry(algorithms=[pair.alg, "A256GCM"])
    result = rfc_jwe.decrypt_json(envelope, key, registry=registry)
    return bytes(result.plaintext or b"")


@pytest.mark.parametrize("algorithm", [*KEY_ALGORITHMS, "RSA1_5"])
def test_envelope_opens_with_independent_library(algorithm: str) -> None:
    pair = TeeKeyPair.generate(algorithm)
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    assert set(envelope) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    assert _open_with_joserfc(pair, envelope) == SECRET
    assert pair.decrypt(envelope) == SECRET


def test_ecdh_header_carries_epk_in_protected_header_in_upstream_order() -> None:
    pair = TeeKeyPair.generate("ECDH-ES+A256KW-P256")
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    header = json.loads(url_decode(envelope["protected"], "protected"))
    assert list(header)[:3] == ["alg", "enc", "epk"]
    assert header["enc"] == "A256GCM"
    assert len(url_decode(envelope["iv"], "iv")) == 12
    assert len(url_decode(envelope["tag"], "tag")) == 16


def test_tampered_ciphertext_is_refused() -> None:
    pair = TeeKeyPair.generate()
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    envelope["ciphertext"] = envelope["ciphertext"][:-2] + ("AA" if envelope["ciphertext"][-2:] != "AA" else "BB")
    with pytest.raises(Exception, match="decrypt"):
        pair.decrypt(envelope)


def test_pem_round_trip_keeps_the_key() -> None:
    pair = TeeKeyPair.generate("ECDH-ES+A256KW-P521")
    again = TeeKeyPair.from_pem(pair.to_pem())
    assert again.public_jwk() == pair.public_jwk()
    assert b"BEGIN PRIVATE KEY" in pair.to_pem()
    assert b"BEGIN RSA PRIVATE KEY" in TeeKeyPair.generate("RSA-OAEP-256").to_pem()


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ("x", "JWK object"),
        ({"kty": "OKP"}, "unsupported kty"),
        ({"kty": "EC", "crv": "P-384", "alg": "ECDH-ES+A256KW", "x": "", "y": ""}, "unsupported curve"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES", "x": "", "y": ""}, "ECDH-ES\\+A256KW"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AAAA", "y": "AAAA"}, "32-byte"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "A" * 43, "y": "A" * 43}, "not on P-256"),
        ({"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}, "RSA-OAEP-256"),
        ({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"}, "2048"),
    ],
)
def test_bad_tee_pubkeys_are_refused_with_the_reason(jwk: object, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        TeePubKey.from_json(jwk)


def test_from_pem_refuses_other_keys() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(MalformedRequestError, match="EC P-256"):
        TeeKeyPair.from_pem(pem)
    with pytest.raises(MalformedRequestError, match="PEM"):
        TeeKeyPair.from_pem(b"garbage")


@pytest.mark.parametrize("algorithm", [*KEY_ALGORITHMS, "RSA1_5"])
def test_protected_header_is_compact_json_so_reserializing_clients_agree(algorithm: str) -> None:
    # guest-components re-serializes the parsed header to compute the GCM AAD.
    pair = TeeKeyPair.generate(algorithm)
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    raw = url_decode(envelope["protected"], "protected").decode()
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"))


@pytest.mark.parametrize("algorithm", [*KEY_ALGORITHMS, "RSA1_5"])
def test_envelope_keeps_the_previous_wire_format_and_opens_with_jwcrypto(algorithm: str) -> None:
    pair = TeeKeyPair.generate(algorithm)
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    protected = url_decode(envelope["protected"], "protected")
    header = json.loads(protected)
    if pair.alg == "ECDH-ES+A256KW":
        size = 32 if algorithm.endswith("P256") else 66
        epk = header["epk"]
        assert list(epk) == ["crv", "kty", "x", "y"]
        assert epk["crv"] == pair.public_jwk()["crv"] and epk["kty"] == "EC"
        assert [len(url_decode(epk[c], c)) for c in "xy"] == [size, size]
        expected = {"alg": pair.alg, "enc": "A256GCM", "epk": epk}
        assert len(url_decode(envelope["encrypted_key"], "encrypted_key")) == 40
    else:
        expected = {"alg": pair.alg, "enc": "A256GCM"}
        assert len(url_decode(envelope["encrypted_key"], "encrypted_key")) == 256
    assert protected == json.dumps(expected, separators=(",", ":")).encode()
    assert len(url_decode(envelope["ciphertext"], "ciphertext")) == len(SECRET)
    assert pair.decrypt(envelope) == SECRET  # jwcrypto, the previous implementation


def test_a_key_seen_once_is_not_probed_again_but_still_checked() -> None:
    from trustee_common import jose

    public = TeeKeyPair.generate().public_jwk()
    before = jose._USABLE_KEYS.hits
    first = TeePubKey.from_json(public)
    assert jose._USABLE_KEYS.hits == before
    TeePubKey.from_json(dict(public))
    assert jose._USABLE_KEYS.hits == before + 1
    first.encrypt(SECRET)
    assert jose._USABLE_KEYS.hits == before + 2
    with pytest.raises(MalformedRequestError, match="unsupported curve"):
        TeePubKey.from_json({**public, "crv": "P-384"})
    with pytest.raises(MalformedRequestError, match="ECDH-ES\\+A256KW"):
        TeePubKey.from_json({**public, "alg": "RSA-OAEP-256"})
    other = TeeKeyPair.generate().public_jwk()
    TeePubKey.from_json(other)
    assert jose._USABLE_KEYS.hits == before + 2
