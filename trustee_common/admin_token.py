"""Admin bearer tokens: minted by `trustee run` and `kbs-client`, verified by the KBS.

An admin token is a JWT signed with the operator's private key (Ed25519 by
default: `alg` EdDSA; EC P-256: ES256; EC P-384: ES384; RSA of at least
2048 bits: RS256), carrying `role`, `iat` and `exp` (trustee-server.md 3.1).
"""

from __future__ import annotations

import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk, jwt

from trustee_common.errors import ConfigError

DEFAULT_ISSUER = "trustee"
DEFAULT_AUDIENCE = "kbs-admin"
MIN_RSA_BITS = 2048
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384"}
SUPPORTED_KEYS = "Ed25519, EC P-256, EC P-384 or RSA (at least 2048 bits)"


def admin_jws_alg(key: object) -> str | None:
    """The JWS `alg` to sign with this admin key (private or public), or None if unsupported."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _EC_ALGS.get(key.curve.name)
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return "RS256"
    return None


def generate_admin_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (PKCS#8 private PEM, SubjectPublicKeyInfo PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def mint_admin_token(
    private_key_pem: bytes,
    *,
    role: str = "admin",
    lifetime_seconds: int = 300,
    now: float | None = None,
    issuer: str = DEFAULT_ISSUER,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign an admin JWT valid from `now` for `lifetime_seconds`."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"admin private key is not a PEM private key: {exc}") from exc
    alg = admin_jws_alg(key)
    if alg is None:
        raise ConfigError(f"admin private key must be {SUPPORTED_KEYS}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": issuer, "sub": "admin", "role": role, "iat": issued, "exp": issued + lifetime_seconds}
    claims.update(extra_claims or {})
    token = jwt.JWT(header={"alg": alg, "typ": "JWT"}, claims=json.dumps(claims))
    token.make_signed_token(jwk.JWK.from_pyca(key))
    return str(token.serialize())
