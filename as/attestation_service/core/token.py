"""The EAR attestation token: claims, ES256 signing and the JWKS.

The token is a compact JWS (ES256) whose header carries the public key as
`jwk` (with `x5c`, standard base64 DER, leaf first, when a certificate
chain is configured, and `x5u` when a URL is). Claims follow rust-ear as
used by upstream (trustee-server.md 6.5): `eat_profile`, `iat`, `exp`
(= iat + duration), `iss`, `ear.verifier-id`, `submods`, plus this
project's private `ear.trustee.appraisal-epoch` (docs/token-freshness.md). `now` is a
parameter; key material comes in as bytes (the caller reads files).

Signing is a direct `cryptography` ECDSA P-256/SHA-256 call with the
signature encoded as raw 32-byte r || 32-byte s (RFC 7518 3.4). The header
(sorted keys, compact JSON, constant per signer) is encoded once.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustee_common.b64 import std_encode, url_encode
from trustee_common.epoch import CLAIM as EPOCH_CLAIM
from trustee_common.errors import ConfigError

ALGORITHM = "ES256"
#: `json.dumps(..., separators=...)` builds an encoder per call; this one is shared.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
#: The signature algorithm object (immutable), built once rather than per token.
_ES256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class TokenSettings:
    duration_min: int = 5
    issuer_name: str = "CoCo-Attestation-Service"
    developer_name: str = "https://confidentialcontainers.org"
    build_name: str = "attestation-service 0.1.0"
    profile_name: str = "tag:github.com,2024:confidential-containers/Trustee"


class TokenSigner:
    """A P-256 signing key and the public JWK placed in every token header."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate] | None = None, cert_url: str | None = None) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"token signing key must be EC P-256, not {key.curve.name}")
        if chain and chain[0].public_key() != key.public_key():
            raise ConfigError("the first certificate of the token certificate chain does not hold the signing key")
        self._key = key
        numbers = key.public_key().public_numbers()
        public: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": url_encode(numbers.x.to_bytes(32, "big")),
            "y": url_encode(numbers.y.to_bytes(32, "big")),
        }
        if chain:
            public["x5c"] = [std_encode(cert.public_bytes(serialization.Encoding.DER)) for cert in chain]
        if cert_url:
            public["x5u"] = cert_url
        self.public_jwk = public
        header = {"alg": ALGORITHM, "typ": "JWT", "jwk": public}
        self._header = url_encode(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())

    @classmethod
    def from_pem(cls, key_pem: bytes, chain_pem: bytes | None = None, cert_url: str | None = None) -> TokenSigner:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"token signing key is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("token signing key must be an EC P-256 key")
        chain = None
        if chain_pem is not None:
            try:
                chain = x509.load_pem_x509_certificates(chain_pem)
            except ValueError as exc:
                raise ConfigError(f"token certificate chain is not PEM certificates: {exc}") from None
        return cls(key, chain, cert_url)

    @classmethod
    def ephemeral(cls) -> TokenSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def has_chain(self) -> bool:
        return "x5c" in self.public_jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.public_jwk)]}

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = f"{self._header}.{url_encode(_COMPACT.encode(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode("ascii"), _ES256))
        return f"{signing_input}.{url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def ear_claims(submods: dict[str, Any], settings: TokenSettings, now: datetime.datetime, *, epoch: str | None = None) -> dict[str, Any]:
    """The EAR claims; `epoch` (the appraisal epoch read before the appraisal) goes in `EPOCH_CLAIM`."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "eat_profile": settings.profile_name,
        "iat": issued,
        "ear.verifier-id": {"developer": settings.developer_name, "build": settings.build_name},
        "submods": submods,
        "exp": issued + settings.duration_min * 60,
        "iss": settings.issuer_name,
    }
    if epoch is not None:
        claims[EPOCH_CLAIM] = epoch
    return claims
