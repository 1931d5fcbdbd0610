"""The pure ocicrypt core: layer cipher, option documents, AnnotationPacket, JWE recipients, descriptors.

Known answers: the ocicrypt-rs sample annotation (ocicrypt-rs
`data/sample_kbc_annotation.json`, wrapped under the sample KBC's
hard-coded key, guest-components.md 9) opens to the private options quoted
there. Interop with real skopeo is in `test_skopeo_interop.py`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from trustee_common.errors import ImageIntegrityError, MalformedRequestError, TrusteeError
from trustee_common.ocicrypt import (
    JWE_ANNOTATION,
    PROVIDER_ANNOTATION,
    PUBOPTS_ANNOTATION,
    AnnotationPacket,
    PrivateLayerOptions,
    PublicLayerOptions,
    decrypt_layer,
    decrypted_descriptor,
    encrypt_layer,
    encrypted_descriptor,
    is_encrypted,
    public_options_of,
    unwrap_private_options,
    unwrap_with_private_keys,
    wrap_for_recipients,
    wrap_private_options,
    wrapped_values,
)

# --- test vectors: ocicrypt-rs data/sample_kbc_annotation.json and the sample KBC key --------------
SAMPLE_KEY = bytes([217, 155, 119, 5, 176, 186, 122, 22, 130, 149, 179, 163, 54, 114, 112, 176, 221, 155, 55, 27,
                    245, 20, 202, 139, 155, 167, 240, 163, 55, 17, 218, 234])
SAMPLE_KID = "kbs:///default/key/1"
SAMPLE_WRAPPED = ("KxAFgXwa0y72Xdygub9lF00RVMtSRbYzvakIEASgi3Gvt1wGLkhKPXf0S033Jdi6vAN6zBM7d0xZSDo2JCeew0FeKwTYgdJfdcPhuEpZOp"
                  "jhwIsidyeiunzp0J/crvI1tSPZJw4DPHZN2eQtg71rDzIbuDM5ATheiDM9/YJv+k+n6Nv6/pRb8qynNzbWFz7Q8wEo1ZZlL6UftOBJ6j9G"
                  "uEOTM2k/B+5sMA2VhGHSzDsKA1mn0qzcn2HJg4GcmxwDpJwzm5n7B4iIJ3A0umrQAjQ=")
SAMPLE_IV = "3PQMqtjbR4hxCr83"
#: The file's wrap_type is the pre-2023 name "aes_256_gcm" (the cipher today's CDH calls A256GCM).
SAMPLE_LEGACY_WRAP_TYPE = "aes_256_gcm"
SAMPLE_PLBCO = (b'{"symkey":"1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs=","digest":"sha256:18be1897f9402f27c8c0eba7c86e0c00f5656db6'
                b'2961b5949d55f9565c42c6e7","cipheroptions":{"nonce":"r10F9oaCu+nWFXfod3l83g=="}}')

KEK = bytes(range(32))
KID = "kbs:///default/image-kek/test"


def sample_packet(wrap_type: str) -> AnnotationPacket:
    return AnnotationPacket.from_json(json.dumps({"kid": SAMPLE_KID, "wrapped_data": SAMPLE_WRAPPED, "iv": SAMPLE_IV,
                                                  "wrap_type": wrap_type}))


def encrypt(data: bytes) -> tuple[bytes, PrivateLayerOptions, PublicLayerOptions]:
    out = io.BytesIO()
    private, public = encrypt_layer(io.BytesIO(data), out)
    return out.getvalue(), private, public


def decrypt(ciphertext: bytes, private: PrivateLayerOptions, public: PublicLayerOptions) -> bytes:
    out = io.BytesIO()
    decrypt_layer(io.BytesIO(ciphertext), out, private, public)
    return out.getvalue()


# --- known answers ----------------------------------------------------------------------------------

def test_ocicrypt_rs_sample_annotation_opens_with_the_sample_key() -> None:
    plbco = unwrap_private_options(sample_packet("A256GCM"), SAMPLE_KEY)
    assert plbco == SAMPLE_PLBCO
    options = PrivateLayerOptions.from_json(plbco)
    assert options.digest == "sha256:18be1897f9402f27c8c0eba7c86e0c00f5656db62961b5949d55f9565c42c6e7"
    assert options.symkey == base64.b64decode("1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs=")
    assert options.to_json() == SAMPLE_PLBCO  # our serialization is Go's byte for byte


def test_legacy_wrap_type_name_is_refused_by_name() -> None:
    with pytest.raises(MalformedRequestError, match="wrap_type 'aes_256_gcm' is not supported"):
        unwrap_private_options(sample_packet(SAMPLE_LEGACY_WRAP_TYPE), SAMPLE_KEY)


def test_layer_cipher_is_aes_ctr_then_hmac_with_the_same_key() -> None:
    """The definition, checked against a direct computation with `cryptography` and `hmac`."""
    import hmac as std_hmac
    symkey, nonce, data = os.urandom(32), os.urandom(16), os.urandom(70_000)
    out = io.BytesIO()
    private, public = encrypt_layer(io.BytesIO(data), out, symkey=symkey, nonce=nonce)
    encryptor = Cipher(algorithms.AES(symkey), modes.CTR(nonce)).encryptor()
    expected = encryptor.update(data) + encryptor.finalize()
    assert out.getvalue() == expected
    assert public.hmac == std_hmac.new(symkey, expected, "sha256").digest()
    assert private.digest == "sha256:" + hashlib.sha256(data).hexdigest()


# --- layer round trips and tampering -------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000))
def test_layer_round_trip(data: bytes) -> None:
    ciphertext, private, public = encrypt(data)
    assert len(ciphertext) == len(data)
    parsed = PrivateLayerOptions.from_json(private.to_json()), PublicLayerOptions.from_annotation(public.to_annotation())
    assert decrypt(ciphertext, *parsed) == data


def test_layer_round_trip_across_chunks() -> None:
    data = os.urandom(2 * 1024 * 1024 + 12345)
    ciphertext, private, public = encrypt(data)
    assert decrypt(ciphertext, private, public) == data


def test_each_layer_gets_a_fresh_key_and_nonce() -> None:
    (_, a, _), (_, b, _) = encrypt(b"same"), encrypt(b"same")
    assert a.symkey != b.symkey and a.nonce != b.nonce


@pytest.mark.parametrize("position", [0, 4999, 9999])
def test_tampered_ciphertext_byte_fails_the_hmac(position: int) -> None:
    ciphertext, private, public = encrypt(os.urandom(10_000))
    tampered = bytearray(ciphertext)
    tampered[position] ^= 1
    with pytest.raises(ImageIntegrityError, match="HMAC"):
        decrypt(bytes(tampered), private, public)


def test_truncated_ciphertext_fails_the_hmac() -> None:
    ciphertext, private, public = encrypt(os.urandom(1000))
    with pytest.raises(ImageIntegrityError, match="HMAC"):
        decrypt(ciphertext[:-1], private, public)


def test_tampered_hmac_in_pubopts_is_refused() -> None:
    ciphertext, private, public = encrypt(b"layer")
    doc = json.loads(public.to_json())
    mac = bytearray(base64.b64decode(doc["hmac"]))
    mac[0] ^= 0x80
    doc["hmac"] = base64.b64encode(bytes(mac)).decode()
    with pytest.raises(ImageIntegrityError, match="HMAC"):
        decrypt(ciphertext, private, PublicLayerOptions.from_json(json.dumps(doc)))


def test_plaintext_digest_mismatch_is_refused() -> None:
    ciphertext, private, public = encrypt(b"layer")
    other = PrivateLayerOptions(private.symkey, private.nonce, "sha256:" + hashlib.sha256(b"another").hexdigest())
    with pytest.raises(ImageIntegrityError, match="digest"):
        decrypt(ciphertext, other, public)


def test_another_layers_key_is_refused() -> None:
    ciphertext, _, public = encrypt(b"layer")
    _, other, _ = encrypt(b"layer")
    with pytest.raises(ImageIntegrityError):
        decrypt(ciphertext, other, public)


# --- option documents ---------------------------------------------------------------------------------

GOOD_PRIVATE = json.loads(SAMPLE_PLBCO)


@pytest.mark.parametrize(("change", "message"), [
    ({"symkey": base64.b64encode(b"short").decode()}, "`symkey` is 5 bytes, expected 32"),
    ({"symkey": 7}, "`symkey` missing"),
    ({"symkey": "not base64!"}, "not standard"),
    ({"digest": "sha256:abc"}, "not a sha256:<hex> digest"),
    ({"digest": None}, "not a sha256:<hex> digest"),
    ({"cipheroptions": {"nonce": base64.b64encode(bytes(12)).decode()}}, "`nonce` is 12 bytes, expected 16"),
    ({"cipheroptions": {}}, "`nonce` missing"),
    ({"cipheroptions": []}, "`cipheroptions` is not a JSON object"),
])
def test_private_options_are_parsed_strictly(change: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        PrivateLayerOptions.from_json(json.dumps({**GOOD_PRIVATE, **change}))


@pytest.mark.parametrize(("text", "message"), [
    ('{"cipher":"AES_128_CTR","hmac":"","cipheroptions":{}}', "cipher 'AES_128_CTR' is not supported"),
    ('{"cipher":"AES_256_CTR_HMAC_SHA256","cipheroptions":{}}', "`hmac` missing"),
    ('{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAA"}', "`hmac` is 3 bytes"),
    ("[]", "not a JSON object"),
    ("{" * 100, "nested deeper"),
])
def test_public_options_are_parsed_strictly(text: str, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        PublicLayerOptions.from_json(text)


def test_option_documents_are_bounded() -> None:
    with pytest.raises(MalformedRequestError, match="larger than"):
        PrivateLayerOptions.from_json(json.dumps({**GOOD_PRIVATE, "pad": "x" * 70_000}))
    with pytest.raises(MalformedRequestError, match="larger than"):
        PublicLayerOptions.from_annotation("A" * 70_000)


def test_private_options_never_show_the_key() -> None:
    options = PrivateLayerOptions.from_json(SAMPLE_PLBCO)
    assert "1jL2" not in repr(options) and str(options.symkey) not in repr(options)


KNOWN_KEYS = ["symkey", "digest", "cipheroptions", "nonce", "cipher", "hmac", "kid", "wrapped_data", "iv", "wrap_type",
              "version", "provider", "provider_settings", "annotations"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(["AAAA", "A" * 43 + "=", "sha256:" + "0" * 64]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KNOWN_KEYS), children, max_size=5),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_option_parsers_raise_only_trustee_errors(data: bytes) -> None:
    for parse in (PrivateLayerOptions.from_json, PublicLayerOptions.from_json, AnnotationPacket.from_json):
        try:
            parse(data)
        except TrusteeError:
            pass


# --- AnnotationPacket -----------------------------------------------------------------------------------

def test_packet_round_trip_through_the_annotation() -> None:
    plbco = encrypt(b"x")[1].to_json()
    packet = wrap_private_options(plbco, KEK, KID)
    doc = json.loads(base64.b64decode(packet.to_annotation()))
    assert list(doc) == ["kid", "wrapped_data", "iv", "wrap_type"]
    assert doc["wrap_type"] == "A256GCM" and len(base64.b64decode(doc["iv"])) == 12
    assert len(base64.b64decode(doc["wrapped_data"])) == len(plbco) + 16
    assert unwrap_private_options(AnnotationPacket.from_annotation(packet.to_annotation()), KEK) == plbco


def test_every_wrap_uses_a_fresh_nonce() -> None:
    assert wrap_private_options(b"{}", KEK, KID).iv != wrap_private_options(b"{}", KEK, KID).iv


def test_wrong_kek_is_an_integrity_error() -> None:
    packet = wrap_private_options(b"{}", KEK, KID)
    with pytest.raises(ImageIntegrityError, match="the key-encryption key does not open"):
        unwrap_private_options(packet, bytes(32))


def test_a256ctr_packets_are_unwrapped() -> None:
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(KEK), modes.CTR(iv)).encryptor()
    packet = AnnotationPacket(KID, encryptor.update(SAMPLE_PLBCO) + encryptor.finalize(), iv, "A256CTR")
    assert unwrap_private_options(AnnotationPacket.from_json(packet.to_json()), KEK) == SAMPLE_PLBCO


def test_v2_packet_with_the_kbs_provider_is_unwrapped() -> None:
    v1 = json.loads(wrap_private_options(SAMPLE_PLBCO, KEK, KID).to_json())
    v2 = AnnotationPacket.from_json(json.dumps({**v1, "version": "0.1.0", "provider": "kbs", "provider_settings": {},
                                                "annotations": {}}))
    assert v2.version == "0.1.0"
    assert unwrap_private_options(v2, KEK) == SAMPLE_PLBCO
    assert AnnotationPacket.from_json(v2.to_json()) == v2


def annotation_of(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


GOOD_PACKET = json.loads(wrap_private_options(SAMPLE_PLBCO, KEK, KID).to_json())


@pytest.mark.parametrize(("annotation", "message"), [
    ("!!not base64!!", "not standard"),
    (base64.b64encode(b"{not json").decode(), "not JSON"),
    (annotation_of([]), "not a JSON object"),
    (annotation_of({**GOOD_PACKET, "kid": ""}), "`kid` missing"),
    (annotation_of({**GOOD_PACKET, "wrapped_data": None}), "`wrapped_data` missing"),
    (annotation_of({**GOOD_PACKET, "wrapped_data": "@@@"}), "`wrapped_data`: not standard"),
    (annotation_of({**GOOD_PACKET, "iv": 12}), "`iv` is not a string"),
    (annotation_of({**GOOD_PACKET, "provider_settings": "x"}), "`provider_settings` is not a JSON object"),
    ("A" * 100_000, "larger than"),
])
def test_malformed_annotations_are_named(annotation: str, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        AnnotationPacket.from_annotation(annotation)


@pytest.mark.parametrize(("change", "message"), [
    ({"wrap_type": "A128GCM"}, "wrap_type 'A128GCM' is not supported"),
    ({"wrap_type": None}, "wrap_type missing is not supported"),
    ({"iv": base64.b64encode(bytes(16)).decode()}, "iv is 16 bytes, A256GCM needs 12 bytes"),
    ({"iv": None}, "iv is missing"),
    ({"wrapped_data": base64.b64encode(bytes(8)).decode()}, "shorter than the 16-byte GCM tag"),
    ({"provider": "aliyun"}, "provider 'aliyun' is not supported"),
    ({"version": "0.2.0"}, "version '0.2.0' is not supported"),
])
def test_packets_that_cannot_be_unwrapped_are_named(change: dict[str, object], message: str) -> None:
    packet = AnnotationPacket.from_json(json.dumps({k: v for k, v in {**GOOD_PACKET, **change}.items() if v is not None}))
    with pytest.raises(MalformedRequestError, match=message):
        unwrap_private_options(packet, KEK)


def test_truncated_wrapped_data_is_an_integrity_error() -> None:
    packet = wrap_private_options(SAMPLE_PLBCO, KEK, KID)
    truncated = AnnotationPacket(packet.kid, packet.wrapped_data[:-1], packet.iv, packet.wrap_type)
    with pytest.raises(ImageIntegrityError):
        unwrap_private_options(truncated, KEK)


@pytest.mark.parametrize("kek", [b"", bytes(16), bytes(33)])
def test_bad_kek_length_is_named(kek: bytes) -> None:
    with pytest.raises(MalformedRequestError, match=f"key-encryption key: {len(kek)} bytes"):
        unwrap_private_options(wrap_private_options(b"{}", KEK, KID), kek)


# --- JWE recipients --------------------------------------------------------------------------------------

def pem_pair(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, bytes]]:
    return {"ec": pem_pair(ec.generate_private_key(ec.SECP256R1())), "ec384": pem_pair(ec.generate_private_key(ec.SECP384R1())),
            "rsa": pem_pair(rsa.generate_private_key(65537, 2048)), "other": pem_pair(ec.generate_private_key(ec.SECP256R1()))}


def test_jwe_for_several_recipients_opens_with_each_key(keys: dict[str, tuple[bytes, bytes]]) -> None:
    token = wrap_for_recipients(SAMPLE_PLBCO, [keys["ec"][1], keys["ec384"][1], keys["rsa"][1]])
    doc = json.loads(token)
    assert [r["header"]["alg"] for r in doc["recipients"]] == ["ECDH-ES+A256KW", "ECDH-ES+A256KW", "RSA-OAEP"]
    value = base64.b64encode(token).decode()
    for name in ("ec", "ec384", "rsa"):
        assert unwrap_with_private_keys(value, [keys[name][0]]) == SAMPLE_PLBCO


def test_single_recipient_jwe_is_flattened_and_opens(keys: dict[str, tuple[bytes, bytes]]) -> None:
    token = wrap_for_recipients(SAMPLE_PLBCO, [keys["rsa"][1]])
    assert "recipients" not in json.loads(token) and "encrypted_key" in json.loads(token)
    assert unwrap_with_private_keys(base64.b64encode(token).decode(), [keys["other"][0], keys["rsa"][0]]) == SAMPLE_PLBCO


def test_comma_joined_values_are_each_tried(keys: dict[str, tuple[bytes, bytes]]) -> None:
    first = base64.b64encode(wrap_for_recipients(b"first", [keys["other"][1]])).decode()
    second = base64.b64encode(wrap_for_recipients(b"second", [keys["ec"][1]])).decode()
    assert unwrap_with_private_keys(f"{first},{second}", [keys["ec"][0]]) == b"second"


def test_no_matching_private_key_is_an_integrity_error(keys: dict[str, tuple[bytes, bytes]]) -> None:
    value = base64.b64encode(wrap_for_recipients(SAMPLE_PLBCO, [keys["ec"][1]])).decode()
    with pytest.raises(ImageIntegrityError, match="none of the 2 private keys"):
        unwrap_with_private_keys(value, [keys["other"][0], keys["rsa"][0]])


def test_unsupported_recipient_keys_are_named(keys: dict[str, tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedRequestError, match="recipient key 1: not a PEM public key"):
        wrap_for_recipients(b"x", [b"junk"])
    with pytest.raises(MalformedRequestError, match="recipient key 2: Ed25519PublicKey keys are not supported"):
        wrap_for_recipients(b"x", [keys["ec"][1], pem_pair(ed25519.Ed25519PrivateKey.generate())[1]])
    small = pem_pair(rsa.generate_private_key(65537, 1024))[1]  # noqa: S505 - the weak key the check must refuse
    with pytest.raises(MalformedRequestError, match="1024 bits"):
        wrap_for_recipients(b"x", [small])


@pytest.mark.parametrize(("value", "message"), [
    ("@@", "not standard"),
    (base64.b64encode(b"[1]").decode(), "not a JWE"),
    (base64.b64encode(b"{").decode(), "not JSON"),
    (",".join(["e30="] * 65), "more than 64 values"),
])
def test_malformed_jwe_annotations_are_named(value: str, message: str, keys: dict[str, tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        unwrap_with_private_keys(value, [keys["ec"][0]])


# --- descriptors -----------------------------------------------------------------------------------------

def test_descriptor_round_trip() -> None:
    plain = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 10,
             "annotations": {"keep": "me"}}
    enc = encrypted_descriptor(plain, "sha256:" + "b" * 64, 10, {PUBOPTS_ANNOTATION: "p", PROVIDER_ANNOTATION: "a,b", JWE_ANNOTATION: "j"})
    assert enc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip+encrypted" and is_encrypted(enc)
    assert wrapped_values(enc, PROVIDER_ANNOTATION) == ["a", "b"] and wrapped_values(plain, JWE_ANNOTATION) == []
    assert decrypted_descriptor(enc, plain["digest"], 10) == plain
    with pytest.raises(MalformedRequestError, match=re.escape(f"no {PUBOPTS_ANNOTATION} annotation")):
        public_options_of(plain)
    mac = PublicLayerOptions(bytes(32))
    assert public_options_of({**enc, "annotations": {PUBOPTS_ANNOTATION: mac.to_annotation()}}) == mac
    assert not is_encrypted(plain)


@pytest.mark.parametrize("media_type", ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+zstd",
                                        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"])
def test_every_oci_layer_type_gains_the_suffix(media_type: str) -> None:
    enc = encrypted_descriptor({"mediaType": media_type}, "sha256:" + "b" * 64, 1, {})
    assert enc["mediaType"] == media_type + "+encrypted"
    assert decrypted_descriptor(enc, "sha256:" + "c" * 64, 1)["mediaType"] == media_type


def test_non_layer_media_types_are_refused() -> None:
    with pytest.raises(MalformedRequestError, match="cannot be encrypted"):
        encrypted_descriptor({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}, "sha256:" + "b" * 64, 1, {})
