"""Admin-token forgery kit for the admin matrix: keys, raw JWS signing, the forged cases.

Tokens are signed with jwcrypto over the exact payload text given, so a
case can carry JSON that `json.dumps` would never write (`NaN`, `1e400`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk, jws

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ISSUER = "matrix-idp"
AUDIENCE = "kbs-admin"
JWKS_ISSUER = "jwks-idp"
RSA_ISSUER = "trustee"  # what `kbs-client --auth-private-key` puts in `iss`


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def sign_raw(key: PrivateKey, payload: str, alg: str, **header: Any) -> str:
    token = jws.JWS(payload.encode())
    token.add_signature(jwk.JWK.from_pyca(key), None, json.dumps({"alg": alg, "typ": "JWT", **header}))
    return str(token.serialize(compact=True))


def claims(role: str = "admin", *, iss: str = ISSUER, aud: Any = AUDIENCE, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "aud": aud, "sub": "matrix", "role": role, "iat": now, "exp": now + 300, **extra}


def sign(key: PrivateKey, alg: str, body: dict[str, Any], **header: Any) -> str:
    return sign_raw(key, json.dumps(body), alg, **header)


def with_raw_exp(body: dict[str, Any], literal: str) -> str:
    """The claims as JSON text with `exp` replaced by a raw JSON literal."""
    return json.dumps({**body, "exp": "@EXP@"}).replace('"@EXP@"', literal)


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}.{b64(signature)}"


def swap_header(token: str, header: dict[str, Any]) -> str:
    _, payload, signature = token.split(".")
    return f"{b64(json.dumps(header).encode())}.{payload}.{signature}"


def hs256_with(secret: bytes, body: dict[str, Any]) -> str:
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass(frozen=True)
class Keys:
    """The identity providers' private keys and the files the KBS reads."""

    ed: ed25519.Ed25519PrivateKey
    rsa: rsa.RSAPrivateKey
    jwks_ec: ec.EllipticCurvePrivateKey
    jwks_rsa: rsa.RSAPrivateKey
    other: ed25519.Ed25519PrivateKey
    ed_public: Path
    rsa_public: Path
    rsa_private: Path
    jwks: Path


def _jwk(key: PrivateKey, kid: str, alg: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(jwk.JWK.from_pyca(key.public_key()).export_public())
    return {**entry, "kid": kid, "alg": alg, "use": "sig"}


def make_keys(root: Path) -> Keys:
    root.mkdir(parents=True, exist_ok=True)
    ed, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(65537, 2048)
    jwks_ec, jwks_rsa = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    files = {"ed.pub": public_pem(ed), "rsa.pub": public_pem(rsa_key), "rsa.key": private_pem(rsa_key)}
    files["jwks.json"] = json.dumps({"keys": [_jwk(jwks_ec, "ec-1", "ES256"), _jwk(jwks_rsa, "rsa-1", "RS256")]}).encode()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return Keys(ed, rsa_key, jwks_ec, jwks_rsa, other, root / "ed.pub", root / "rsa.pub", root / "rsa.key", root / "jwks.json")


def token_cases(keys: Keys, wrong_method_role: str) -> dict[str, str | None]:
    """Every refused case of the matrix (name → token, None = no header), plus `valid`."""
    now = int(time.time())
    ed = keys.ed
    cases: dict[str, str | None] = {
        "no token": None,
        "expired": sign(ed, "EdDSA", claims(iat=now - 900, exp=now - 600)),
        "future nbf": sign(ed, "EdDSA", claims(nbf=now + 600)),
        "future iat": sign(ed, "EdDSA", claims(iat=now + 600)),
        "wrong issuer": sign(ed, "EdDSA", claims(iss="someone-else")),
        "wrong audience": sign(ed, "EdDSA", claims(aud=["other"])),
        "wrong role": sign(ed, "EdDSA", claims("guest")),
        "wrong method": sign(ed, "EdDSA", claims(wrong_method_role)),
        "other key": sign(keys.other, "EdDSA", claims()),
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, claims()),
        "alg none with signature": unsigned({"alg": "none", "typ": "JWT"}, claims(), b"x" * 64),
        "HS256 with the public key PEM": hs256_with(keys.ed_public.read_bytes(), claims()),
        "HS256 with the RSA public key PEM": hs256_with(keys.rsa_public.read_bytes(), claims(iss=RSA_ISSUER)),
        "RS256 header on the Ed25519 key": swap_header(sign(ed, "EdDSA", claims()), {"alg": "RS256", "typ": "JWT"}),
        "exp NaN": sign_raw(ed, with_raw_exp(claims(), "NaN"), "EdDSA"),
        "exp Infinity": sign_raw(ed, with_raw_exp(claims(), "Infinity"), "EdDSA"),
        "exp 1e400": sign_raw(ed, with_raw_exp(claims(), "1e400"), "EdDSA"),
        "exp true": sign_raw(ed, with_raw_exp(claims(), "true"), "EdDSA"),
        "exp string": sign_raw(ed, with_raw_exp(claims(), f'"{now + 300}"'), "EdDSA"),
        "exp past year 9999": sign_raw(ed, with_raw_exp(claims(), "1" + "0" * 30), "EdDSA"),
        "no exp": sign(ed, "EdDSA", {k: v for k, v in claims().items() if k != "exp"}),
        "duplicate exp": sign_raw(ed, json.dumps(claims(exp=now - 600))[:-1] + f', "exp": {now + 300}}}', "EdDSA"),
        "valid": sign(ed, "EdDSA", claims()),
    }
    return cases
