"""The AS's direct ES256 signing: joserfc, jwcrypto and the KBS verifier all accept its tokens."""

from __future__ import annotations

import datetime
import json
import time

from attestation_service.core.token import TokenSettings, TokenSigner, ear_claims
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws

from kbs.core.token import AttestationTokenVerifier, TokenTrust
from trustee_common.pki import issue_leaf, make_ca, pem_cert

from .helpers import b64url_decode, verify_token

NOW = datetime.datetime.now(datetime.UTC)


def _signer() -> tuple[TokenSigner, bytes, TokenTrust]:
    ca_key, ca = make_ca("AS test CA")
    key, leaf = issue_leaf(ca_key, ca, "AS test signer")
    return TokenSigner(key, [leaf, ca]), pem_cert(ca), TokenTrust((ca,))


def test_tokens_verify_with_joserfc_jwcrypto_and_the_kbs_verifier() -> None:
    signer, ca_pem, trust = _signer()
    claims = ear_claims({"cpu0": {"ear.status": "affirming"}}, TokenSettings(), NOW)
    token = signer.sign(claims)
    assert verify_token(token, ca_pem) == claims
    checker = jwc_jws.JWS()
    checker.deserialize(token)
    checker.verify(jwc_jwk.JWK(**signer.public_jwk), alg="ES256")
    assert json.loads(checker.payload) == claims
    assert AttestationTokenVerifier(trust).verify(token, time.time()) == claims


def test_header_is_compact_sorted_json_and_signature_is_raw_r_s() -> None:
    signer, _, _ = _signer()
    header, payload, signature = signer.sign({"b": 1, "a": 2}).split(".")
    expected = {"alg": "ES256", "jwk": signer.public_jwk, "typ": "JWT"}
    assert b64url_decode(header) == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
    assert b64url_decode(payload) == b'{"b":1,"a":2}'
    assert len(b64url_decode(signature)) == 64
    assert "=" not in header + payload + signature
