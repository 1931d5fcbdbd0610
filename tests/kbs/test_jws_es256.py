"""`verify_es256`: the direct ECDSA check accepts what JOSE libraries sign and nothing else."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws as rfc_jws
from joserfc.jwk import ECKey

from kbs.core.jws import parse_compact, verify_es256
from trustee_common.b64 import url_encode
from trustee_common.errors import TokenVerifierError
from trustee_common.pki import pem_private_key

KEY = ec.generate_private_key(ec.SECP256R1())
CLAIMS = {"exp": 4_000_000_000, "sub": "x"}


def _check(token: str, key: ec.EllipticCurvePublicKey | None = None) -> None:
    verify_es256(parse_compact(token, TokenVerifierError), key or KEY.public_key(), TokenVerifierError)


def _signed(header: dict[str, object], sign: bytes | None = None) -> str:
    signing_input = f"{url_encode(json.dumps(header).encode())}.{url_encode(json.dumps(CLAIMS).encode())}"
    if sign is None:
        r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        sign = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{url_encode(sign)}"


def test_a_joserfc_signed_token_verifies() -> None:
    token = rfc_jws.serialize_compact({"alg": "ES256"}, json.dumps(CLAIMS).encode(), ECKey.import_key(pem_private_key(KEY)))
    _check(token)


def test_our_reference_signature_verifies_and_any_change_is_refused() -> None:
    token = _signed({"alg": "ES256"})
    _check(token)
    header, payload, signature = token.split(".")
    for bad in (
        f"{header}.{url_encode(json.dumps({**CLAIMS, 'sub': 'y'}).encode())}.{signature}",
        f"{header}.{payload}.{signature[:-2]}",
        f"{header}.{payload}.{url_encode(bytes(64))}",
        f"{header}.{payload}.{signature}==",
        _signed({"alg": "ES384"}),
    ):
        with pytest.raises(TokenVerifierError):
            _check(bad)
    with pytest.raises(TokenVerifierError):
        _check(token, ec.generate_private_key(ec.SECP256R1()).public_key())


def test_a_der_encoded_signature_is_refused() -> None:
    header = {"alg": "ES256"}
    signing_input = f"{url_encode(json.dumps(header).encode())}.{url_encode(json.dumps(CLAIMS).encode())}"
    der = KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(TokenVerifierError):
        _check(f"{signing_input}.{url_encode(der)}")
