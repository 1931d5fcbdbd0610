"""The pin's JWE and config rules (pure code; the pin end to end is in test_clevis_trustee.py)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from clevis_trustee import jwe
from clevis_trustee.config import CdhEndpoint, cdh_endpoint, parse_encrypt_config

from trustee_common.errors import ConfigError

CONFIG = {"url": "http://kbs:8080", "path": "default/disk/root"}


def test_round_trip_and_header() -> None:
    key = jwe.new_key()
    token = jwe.encrypt(key, CONFIG, b"secret")
    header = jwe.read_header(token)
    assert (header.url, header.path, header.cdh) == ("http://kbs:8080", "default/disk/root", None)
    assert jwe.decrypt(token, key, header) == b"secret"
    assert jwe.key_from_jwk(jwe.key_jwk(key), "p") == key


def test_thumbprint_is_rfc7638() -> None:
    """RFC 7638: SHA-256 over {"k","kty"} in lexicographic order without whitespace."""
    key = bytes(range(32))
    k = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    expected = hashlib.sha256(('{"k":"' + k + '","kty":"oct"}').encode()).digest()
    assert jwe.thumbprint(key) == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()


def test_wrong_key_is_named() -> None:
    token = jwe.encrypt(jwe.new_key(), CONFIG, b"secret")
    with pytest.raises(jwe.PinError, match="not the one this JWE was made with"):
        jwe.decrypt(token, jwe.new_key(), jwe.read_header(token))


@pytest.mark.parametrize(("text", "message"), [
    ("a.b.c", "expected 5 dot-separated parts, got 3"),
    ("!!.a.b.c.d", "not base64url"),
    (base64.urlsafe_b64encode(b'{"clevis":{"pin":"tang"}}').decode().rstrip("=") + "....", "pin mismatch"),
    (base64.urlsafe_b64encode(b'{"alg":"ECDH-ES","enc":"A256GCM","clevis":{"pin":"trustee"}}').decode().rstrip("=") + "....",
     "this pin reads only dir"),
])
def test_bad_jwe_is_named(text: str, message: str) -> None:
    with pytest.raises(jwe.PinError, match=message):
        jwe.read_header(text)


@pytest.mark.parametrize("resource", [b"raw bytes", b'{"kty":"oct","k":"AAAA"}', b"[]", b'{"kty":"EC"}'])
def test_resource_that_is_not_a_key_is_refused(resource: bytes) -> None:
    with pytest.raises(jwe.PinError, match="is not a 256-bit oct JWK"):
        jwe.key_from_jwk(resource, "default/disk/x")


def test_config_keeps_only_locations_in_the_header() -> None:
    config = parse_encrypt_config(json.dumps({**CONFIG, "cdh": "grpc://127.0.0.1:50000", "admin_token_file": "/t", "cert_file": "/c"}))
    assert config.header() == {**CONFIG, "cdh": "grpc://127.0.0.1:50000"}


@pytest.mark.parametrize(("value", "expected"), [
    ("http://127.0.0.1:8006/", CdhEndpoint(rest="http://127.0.0.1:8006")),
    ("grpc://127.0.0.1:50000", CdhEndpoint(grpc="127.0.0.1:50000")),
    ("unix:/run/cdh.sock", CdhEndpoint(grpc="unix:/run/cdh.sock")),
])
def test_cdh_endpoint(value: str, expected: CdhEndpoint) -> None:
    assert cdh_endpoint(value, "cdh") == expected


@pytest.mark.parametrize("value", ["https://127.0.0.1:8006", "http://host", "grpc://", "127.0.0.1:8006", "http://h:1/x"])
def test_bad_cdh_endpoint_is_named(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^cdh: "):
        cdh_endpoint(value, "cdh")


def latchset_jwe(key: bytes, plaintext: bytes, clevis: dict[str, object]) -> str:
    """A compact JWE as latchset's clevis-pin-trustee lays it out (alg dir, clevis.servers and clevis.path, no kid)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    protected = b64(json.dumps({"alg": "dir", "enc": "A256GCM", "clevis": clevis}).encode())
    iv = bytes(12)
    sealed = AESGCM(key).encrypt(iv, plaintext, protected.encode())
    return f"{protected}..{b64(iv)}.{b64(sealed[:-16])}.{b64(sealed[-16:])}"


def test_latchset_form_is_read() -> None:
    key_text = "k" * 32
    token = latchset_jwe(key_text.encode(), b"secret", {"pin": "trustee", "servers": [{"url": "http://kbs", "cert": ""}],
                                                        "path": "default/disk/root"})
    header = jwe.read_header(token)
    assert (header.form, header.url, header.path, header.kid) == (jwe.LATCHSET, "http://kbs", "default/disk/root", None)
    key = jwe.key_from_resource(json.dumps({"key_type": "oct", "key": key_text}).encode(), header)
    assert jwe.decrypt(token, key, header) == b"secret"
    with pytest.raises(jwe.PinError, match="key_type"):
        jwe.key_from_resource(jwe.key_jwk(jwe.new_key()), header)


def test_latchset_form_needs_servers() -> None:
    token = latchset_jwe(bytes(32), b"", {"pin": "trustee", "servers": [], "path": "default/disk/root"})
    with pytest.raises(jwe.PinError, match=r"clevis\.servers"):
        jwe.read_header(token)
