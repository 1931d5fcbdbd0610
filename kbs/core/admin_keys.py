"""Verification keys of admin identity providers: PEM public keys and JWK sets.

A key is bound to the JWS algorithms its type allows, so a token's header
`alg` can never make the KBS use a key in another way (no `none`, no HMAC
with a public key as the secret, no RSA/EC confusion):

| key | algorithms |
|---|---|
| Ed25519 | EdDSA |
| EC P-256 / P-384 / P-521 | ES256 / ES384 / ES512 |
| RSA, modulus ≥ 2048 bits | RS256, RS384, RS512, PS256, PS384, PS512 |

A PEM key applies to every token whatever its `kid`. A JWK-set key is
chosen by the token's header `kid` and must carry `kid` and `alg`; the
token's `alg` must then equal the JWK's. Symmetric (`oct`) JWKs and other
key types are a `ConfigError`. This module takes bytes; reading files is
the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk
from jwcrypto.common import JWException

from kbs.core.jws import strict_json_loads
from trustee_common.errors import ConfigError

MIN_RSA_BITS = 2048
MAX_JWKS_KEYS = 256
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


@dataclass(frozen=True)
class VerificationKey:
    key: jwk.JWK
    algs: frozenset[str]
    #: None for a PEM key (any `kid`); the JWK's `kid` for a JWK-set key.
    kid: str | None = None

    def accepts(self, header: dict[str, Any]) -> str | None:
        """The algorithm to verify a token with this header, or None if this key does not apply."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algs:
            return None
        if self.kid is not None and header.get("kid") != self.kid:
            return None
        return alg


def public_key_algs(key: object) -> frozenset[str] | None:
    """The JWS algorithms allowed with this public key, or None if its type or size is unsupported."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGS:
        return frozenset({_EC_ALGS[key.curve.name]})
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return _RSA_ALGS
    return None


SUPPORTED = "Ed25519, EC P-256/P-384/P-521 or RSA with at least 2048 bits"


def key_from_pem(pem: bytes, where: str) -> VerificationKey:
    """A PEM SubjectPublicKeyInfo key; `ConfigError` naming `where` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not a PEM public key: {exc}") from None
    algs = public_key_algs(key)
    if algs is None:
        raise ConfigError(f"{where}: admin public keys must be {SUPPORTED}")
    return VerificationKey(jwk.JWK.from_pyca(key), algs)


def jwk_set_entries(data: bytes, where: str) -> list[Any]:
    """The entries of a JWK set document `{"keys": [...]}`: non-empty, at most MAX_JWKS_KEYS; `ConfigError` naming `where`."""
    try:
        document = strict_json_loads(data)
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: not a JSON JWK set") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{where}: a JWK set needs a non-empty "keys" array')
    if len(entries) > MAX_JWKS_KEYS:
        raise ConfigError(f"{where}: more than {MAX_JWKS_KEYS} keys")
    return entries


def keys_from_jwks(data: bytes, where: str) -> tuple[VerificationKey, ...]:
    """Every key of a JWK set `{"keys": [...]}`; each needs `kid` and an `alg` its type allows."""
    entries = jwk_set_entries(data, where)
    keys = tuple(_jwk_entry(entry, f"{where} keys[{i}]") for i, entry in enumerate(entries))
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise ConfigError(f"{where}: two keys share a kid")
    return keys


def _jwk_entry(entry: object, where: str) -> VerificationKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: not a JSON object")
    kid, alg = entry.get("kid"), entry.get("alg")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        raise ConfigError(f"{where}: a JWK needs string kid and alg members")
    if entry.get("kty") == "oct":
        raise ConfigError(f"{where}: symmetric (oct) keys are not supported")
    if entry.get("use", "sig") != "sig":
        raise ConfigError(f"{where}: use {entry.get('use')!r} is not a signature key")
    try:
        public = jwk.JWK(**entry).get_op_key("verify")
    except (JWException, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: not a usable public JWK: {exc}") from None
    algs = public_key_algs(public)
    if algs is None:
        raise ConfigError(f"{where}: admin keys must be {SUPPORTED}")
    if alg not in algs:
        raise ConfigError(f"{where}: alg {alg!r} does not fit the key type (allowed: {', '.join(sorted(algs))})")
    return VerificationKey(jwk.JWK.from_pyca(public), frozenset({alg}), kid)
