"""Attestation-token (EAR JWT) verification and TEE-key extraction (trustee-server.md 2.5.2, 2.5.3).

The token is ES256 with the signing key in the header `jwk`. Unless
`insecure_header_jwk` is set, that JWK must carry `x5c` whose first
certificate holds the same public key, and the chain must reach one of the
trusted certificates at `now` (cryptography's X.509 path validation).
`exp` is required; `exp`, `nbf` and `iat` are checked as `kbs.core.jws`
does (finite numbers in range, 60 s leeway). Tokens without a header
`jwk` (key looked up by `kid` in a JWK set, Intel Trust Authority) are
not supported.

Failure details are deliberately generic for the client; the reason is
logged at info level.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError
from jwcrypto import jwk

from kbs.core.jws import check_time_claims, parse_compact, verify_signature
from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError, TokenVerifierError
from trustee_common.jose import TeePubKey

logger = logging.getLogger(__name__)

TOKEN_ALG = "ES256"  # noqa: S105 (an algorithm name, not a secret)
MAX_CHAIN_LENGTH = 8

#: Where upstream looks for the TEE key, after the configured pointers.
TEE_KEY_POINTERS = (
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
    "/tdx/attester_runtime_data/tee-pubkey",
    "/tdx/attester_user_data/tee-pubkey",
    "/customized_claims/runtime_data/tee-pubkey",
    "/tee-pubkey",
)


@dataclass(frozen=True)
class TokenTrust:
    anchors: tuple[x509.Certificate, ...]
    insecure_header_jwk: bool = False
    extra_teekey_paths: tuple[str, ...] = ()


def _check_ca(_policy: object, _cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("issuer is not a CA")


def _check_ca_usage(_policy: object, _cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("issuer key usage lacks keyCertSign")


# The token-signing certificate is not a TLS client or server certificate:
# any extensions on the leaf; issuers must be CAs allowed to sign certificates.
_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _check_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _check_ca_usage)
)


class AttestationTokenVerifier:
    def __init__(self, trust: TokenTrust) -> None:
        self.trust = trust
        self._store = Store(list(trust.anchors)) if trust.anchors else None

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The verified claims; `TokenVerifierError` for anything else."""
        try:
            return self._verify(token, now)
        except TokenVerifierError as exc:
            logger.info("attestation token rejected: %s", exc.detail)
            raise TokenVerifierError("Token Verifier error: attestation token verification failed") from None

    def check_times(self, claims: dict[str, Any], now: float) -> None:
        """Claims verified earlier (a cookie session's) are still within `exp`/`nbf`/`iat` at `now`."""
        try:
            check_time_claims(claims, now, TokenVerifierError)
        except TokenVerifierError as exc:
            logger.info("attestation token of the session rejected: %s", exc.detail)
            raise TokenVerifierError("Token Verifier error: attestation token verification failed") from None

    def _verify(self, token: str, now: float) -> dict[str, Any]:
        parsed = parse_compact(token, TokenVerifierError)
        header_jwk = parsed.header.get("jwk")
        if not isinstance(header_jwk, dict):
            raise TokenVerifierError("token header has no jwk (JWK-set lookup by kid is not supported)")
        public_key = _ec_public_key(header_jwk)
        if not self.trust.insecure_header_jwk:
            self._check_endorsement(header_jwk, public_key, now)
        verify_signature(parsed, jwk.JWK.from_pyca(public_key), TOKEN_ALG, TokenVerifierError)
        check_time_claims(parsed.claims, now, TokenVerifierError)
        return parsed.claims

    def _check_endorsement(self, header_jwk: dict[str, Any], public_key: ec.EllipticCurvePublicKey, now: float) -> None:
        chain = _x5c_certificates(header_jwk.get("x5c"))
        if _spki(chain[0].public_key()) != _spki(public_key):
            raise TokenVerifierError("x5c[0] does not hold the header jwk key")
        if self._store is None:
            raise TokenVerifierError("no trusted certificates configured")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(datetime.datetime.fromtimestamp(now, datetime.UTC))
            .max_chain_depth(MAX_CHAIN_LENGTH)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        try:
            verifier.verify(chain[0], chain[1:])
        except VerificationError as exc:
            raise TokenVerifierError(f"x5c chain does not verify: {exc}") from None

    def tee_pubkey(self, claims: dict[str, Any]) -> TeePubKey:
        """The first TEE key found at the configured, then the upstream, JSON pointers."""
        for pointer in (*self.trust.extra_teekey_paths, *TEE_KEY_POINTERS):
            found = resolve_pointer(claims, pointer)
            if found is not None:
                try:
                    return TeePubKey.from_json(found, f"token claim {pointer}")
                except MalformedRequestError as exc:
                    raise TokenVerifierError(f"Token Verifier error: TEE public key in the token is not valid: {exc.detail}") from None
        raise TokenVerifierError("Token Verifier error: no TEE public key claim found in the token")


def _ec_public_key(value: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    if value.get("kty") != "EC" or value.get("crv") != "P-256":
        raise TokenVerifierError("header jwk must be an EC P-256 key")
    if value.get("alg", TOKEN_ALG) != TOKEN_ALG:
        raise TokenVerifierError("header jwk alg must be ES256")
    try:
        x, y = (url_decode(str(value.get(c, "")), f"jwk.{c}") for c in "xy")
        if len(x) != 32 or len(y) != 32:
            raise ValueError("coordinate length")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except (MalformedRequestError, ValueError):
        raise TokenVerifierError("header jwk is not a valid P-256 key") from None


def _x5c_certificates(value: object) -> list[x509.Certificate]:
    if not isinstance(value, list) or not value or len(value) > MAX_CHAIN_LENGTH:
        raise TokenVerifierError("header jwk has no usable x5c chain")
    certs = []
    for item in value:
        if not isinstance(item, str):
            raise TokenVerifierError("x5c entries must be strings")
        certs.append(_der_certificate(item))
    return certs


def _der_certificate(text: str) -> x509.Certificate:
    """Standard base64 per RFC 7517; URL-safe accepted as upstream does."""
    try:
        if set(text) & set("-_"):
            der = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        else:
            der = base64.b64decode(text, validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise TokenVerifierError("x5c entry is not a base64 DER certificate") from None


def _spki(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; None when any step is missing."""
    if pointer == "":
        return document
    current = document
    for raw in pointer.split("/")[1:]:
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
        if current is None:
            return None
    return current
