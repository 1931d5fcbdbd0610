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


# --- the guest's own EC decryption (trustee_common.jwe_decrypt), checked against jwcrypto and joserfc ---------


def _encrypt_with_joserfc(pair: TeeKeyPair, plaintext: bytes, *, aad: bytes | None = None, **header: Any) -> dict[str, Any]:
    key = ECKey.import_key(pair.public_jwk())
    registry = rfc_jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "A256GCM"])
    obj = rfc_jwe.GeneralJSONEncryption({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", **header}, plaintext, aad=aad)
    obj.add_recipient(None, key)
    return dict(rfc_jwe.encrypt_json(obj, None, registry=registry))


def _flattened(general: dict[str, Any]) -> dict[str, Any]:
    [recipient] = general.pop("recipients")
    return {**general, **recipient}


def _encrypt_with_jwcrypto(pair: TeeKeyPair, plaintext: bytes) -> dict[str, Any]:
    from jwcrypto import jwe, jwk

    token = jwe.JWE(plaintext, json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    token.add_recipient(jwk.JWK(**pair.public_jwk()))
    return dict(json.loads(token.serialize()))


@pytest.mark.parametrize("algorithm", ["ECDH-ES+A256KW-P256", "ECDH-ES+A256KW-P521"])
def test_ec_envelopes_of_independent_libraries_open_on_the_direct_path(algorithm: str) -> None:
    from trustee_common.jwe_decrypt import open_ec

    pair = TeeKeyPair.generate(algorithm)
    ours = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    made = [ours, _encrypt_with_jwcrypto(pair, SECRET), _flattened(_encrypt_with_joserfc(pair, SECRET)),
            _flattened(_encrypt_with_joserfc(pair, SECRET, aad=b"bound context", kid="k1"))]
    assert "aad" in made[-1]
    assert [("epk" in e.get("header", {})) for e in made] == [False, True, True, True]  # epk protected, or per recipient
    for envelope in made:
        assert open_ec(pair._ec, envelope) == SECRET  # handled here, not passed to jwcrypto
        assert pair.decrypt(envelope) == SECRET
    loaded = TeeKeyPair.from_pem(pair.to_pem())
    assert loaded.decrypt(ours) == SECRET and loaded.public_jwk() == pair.public_jwk()
    assert pair.public_jwk() == {**{k: v for k, v in json.loads(pair._key.export_public()).items() if k != "kid"},
                                 "alg": "ECDH-ES+A256KW"}  # the same JWK as jwcrypto's


def _flip(text: str) -> str:
    raw = bytearray(url_decode(text, "member"))
    raw[len(raw) // 2] ^= 0x01
    from trustee_common.b64 import url_encode

    return url_encode(bytes(raw))


@pytest.mark.parametrize(("member", "reason"), [
    ("ciphertext", "does not decrypt"), ("tag", "does not decrypt"), ("iv", "does not decrypt"),
    ("encrypted_key", "does not unwrap"), ("protected", "does not decrypt|protected|epk"), ("aad", "does not decrypt"),
])
def test_a_tampered_ec_envelope_is_refused_naming_the_step(member: str, reason: str) -> None:
    pair = TeeKeyPair.generate()
    envelope = _flattened(_encrypt_with_joserfc(pair, SECRET, aad=b"context"))
    if member == "protected":  # another key id in the header: the AAD no longer matches
        header = json.loads(url_decode(envelope["protected"], "protected"))
        from trustee_common.b64 import url_encode

        envelope["protected"] = url_encode(json.dumps({**header, "kid": "other"}).encode())
    else:
        envelope[member] = _flip(envelope[member])
    with pytest.raises(Exception, match=reason):
        pair.decrypt(envelope)


def test_an_envelope_for_another_key_or_curve_or_off_the_curve_is_refused() -> None:
    from trustee_common.b64 import url_encode

    pair, other = TeeKeyPair.generate(), TeeKeyPair.generate()
    with pytest.raises(Exception, match="does not unwrap"):
        pair.decrypt(TeePubKey.from_json(other.public_jwk()).encrypt(SECRET))
    big = TeeKeyPair.generate("ECDH-ES+A256KW-P521")
    with pytest.raises(Exception, match="epk is on P-521"):
        pair.decrypt(TeePubKey.from_json(big.public_jwk()).encrypt(SECRET))
    envelope = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    header = json.loads(url_decode(envelope["protected"], "protected"))
    header["epk"]["y"] = url_encode(bytes(32))  # (x, 0) is not on P-256
    envelope["protected"] = url_encode(json.dumps(header).encode())
    with pytest.raises(Exception, match="decrypt"):
        pair.decrypt(envelope)


def test_other_shapes_go_to_the_general_library() -> None:
    from trustee_common.jwe_decrypt import open_ec

    pair = TeeKeyPair.generate()
    with_apu = _flattened(_encrypt_with_joserfc(pair, SECRET, apu="YWxpY2U", apv="Ym9i"))
    general = _encrypt_with_joserfc(pair, SECRET)
    padded = TeePubKey.from_json(pair.public_jwk()).encrypt(SECRET)
    padded["tag"] += "=" * (-len(padded["tag"]) % 4)
    assert padded["tag"].endswith("==")
    for envelope in (with_apu, padded):
        assert open_ec(pair._ec, envelope) is None
        assert pair.decrypt(envelope) == SECRET  # jwcrypto opens them
    assert open_ec(pair._ec, general) is None  # several-recipient (general) syntax


def test_an_aad_member_that_is_not_base64url_goes_to_the_general_library() -> None:
    from trustee_common.jwe_decrypt import open_ec

    pair = TeeKeyPair.generate()
    envelope = _flattened(_encrypt_with_joserfc(pair, SECRET, aad=b"context"))
    envelope["aad"] = "not base64url: é"
    assert open_ec(pair._ec, envelope) is None
    with pytest.raises(Exception, match="decrypt"):
        pair.decrypt(envelope)
