"""Attestation-token (EAR JWT) verification and TEE-key extraction (trustee-server.md 2.5.2, 2.5.3).

The token is ES256 with the signing key in the header `jwk`. Unless
`insecure_header_jwk` is set or the key is one of `trusted_keys` (the
signing key of the AS embedded in this KBS, `coco_as_builtin`, known in
process), that JWK must carry `x5c` whose first
certificate holds the same public key, and the chain must reach one of the
trusted certificates at `now` (cryptography's X.509 path validation).
`exp` is required; `exp`, `nbf` and `iat` are checked as `kbs.core.jws`
does (finite numbers in range, 60 s leeway). A token without a header
`jwk` is verified with the key its `kid` names in the trusted JWK sets
(`TokenTrust.jwk_sets`: `trusted_jwk_sets`, Intel Trust Authority's
`certs_file`; `kbs.core.jwk_set`), with that JWK's algorithm; its claims
get the EAR-shaped `submods.cpu0` view when they are ITA claims
(`kbs.core.ita_claims`). An unknown `kid` can make the caller refresh the
sets once (`verify_fresh`, with the `refresh` the composition root sets;
the refresh itself is bounded there, `kbs.jwks`).

A successful chain validation is remembered (bounded LRU, `CHAIN_CACHE_SIZE`)
under a digest of the anchor set and the x5c DER certificates, with the
validity window of the path that was validated (latest `notBefore`,
earliest `notAfter`): a later token with the same chain and a `now` inside
that window skips path building; any other `now` validates again. The
decoded header, the key it names and its chain's digest are kept per
header text (`HEADER_CACHE_SIZE`): every token of one signer repeats it. The ES256 signature (direct
ECDSA verify, `kbs.core.jws.verify_es256`) and the time claims are checked
on every token.

Failure details are deliberately generic for the client; the reason is
logged at info level.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from kbs.core.ita_claims import with_ear_view
from kbs.core.jwk_set import KeyRing, TrustedJwk, header_kid, window_text
from kbs.core.jws import CompactJws, check_time_claims, parse_compact, verify_es256, verify_signature
from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError, TokenVerifierError, clip_repr
from trustee_common.jose import TeePubKey
from trustee_common.lru import BoundedLru

logger = logging.getLogger(__name__)

TOKEN_ALG = "ES256"  # noqa: S105 (an algorithm name, not a secret)
MAX_CHAIN_LENGTH = 8
CHAIN_CACHE_SIZE = 64
KEY_CACHE_SIZE = 64
HEADER_CACHE_SIZE = 64

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
    #: Signing keys trusted outright (uncompressed P-256 points): the AS embedded in this KBS (`coco_as_builtin`).
    trusted_keys: tuple[bytes, ...] = ()
    #: Keys looked up by `kid` for tokens without a header `jwk` (`trusted_jwk_sets`, ITA's `certs_file`).
    jwk_sets: tuple[KeyRing, ...] = ()


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


@dataclass(frozen=True, slots=True)
class _Signer:
    """A decoded token header and what it names: its key (uncompressed P-256 point, parsed) and the digest of its
    x5c chain (b"": none)."""

    header: dict[str, Any]
    point: bytes
    key: ec.EllipticCurvePublicKey
    chain_digest: bytes
    ders: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _ValidatedChain:
    """A chain that validated: its leaf key (uncompressed P-256 point, or b"") and the path's validity window."""

    leaf_point: bytes
    not_before: float
    not_after: float

    def covers(self, now: float) -> bool:
        return self.not_before <= now <= self.not_after


class AttestationTokenVerifier:
    def __init__(self, trust: TokenTrust) -> None:
        self.trust = trust
        self._store = Store(list(trust.anchors)) if trust.anchors else None
        anchors = sorted(hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).digest() for c in trust.anchors)
        self._anchor_digest = hashlib.sha256(b"".join(anchors)).digest()
        self.chain_cache: BoundedLru[bytes, _ValidatedChain] = BoundedLru(CHAIN_CACHE_SIZE)
        self._keys: BoundedLru[bytes, ec.EllipticCurvePublicKey] = BoundedLru(KEY_CACHE_SIZE)
        self._signers: BoundedLru[str, _Signer] = BoundedLru(HEADER_CACHE_SIZE)
        self._trusted_keys = frozenset(trust.trusted_keys)
        #: Fetches the JWK sets again (bounded by its owner); called once for a token with an unknown `kid`.
        self.refresh: Callable[[], Awaitable[None]] | None = None

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The verified claims; `TokenVerifierError` for anything else."""
        try:
            return self._verify(token, now)
        except TokenVerifierError as exc:
            logger.info("attestation token rejected: %s", exc.detail)
            raise TokenVerifierError("Token Verifier error: attestation token verification failed") from None

    def verify_detailed(self, token: str, now: float) -> dict[str, Any]:
        """`verify` with the reason in the `TokenVerifierError` (for tokens the KBS fetched itself, not a client's)."""
        return self._verify(token, now)

    async def verify_fresh(self, token: str, now: float) -> dict[str, Any]:
        """`verify`, after one refresh of the JWK sets when the token names a `kid` none of them holds."""
        if self.refresh is not None and self.unknown_kid(token) is not None:
            await self.refresh()
        return self.verify(token, now)

    def unknown_kid(self, token: str) -> str | None:
        """The header `kid` of a JWK-set token that no trusted set holds (None otherwise, or if unreadable)."""
        if not self.trust.jwk_sets:
            return None
        try:
            kid = header_kid(parse_compact(token, TokenVerifierError).header)
        except TokenVerifierError:
            return None
        if kid is None or any(ring.has_kid(kid) for ring in self.trust.jwk_sets):
            return None
        return kid

    def _jwk(self, kid: str, alg: object) -> TrustedJwk | None:
        for ring in self.trust.jwk_sets:
            key = ring.get(kid, alg)
            if key is not None:
                return key
        return None

    def check_times(self, claims: dict[str, Any], now: float) -> None:
        """Claims verified earlier (a cookie session's) are still within `exp`/`nbf`/`iat` at `now`."""
        try:
            check_time_claims(claims, now, TokenVerifierError)
        except TokenVerifierError as exc:
            logger.info("attestation token of the session rejected: %s", exc.detail)
            raise TokenVerifierError("Token Verifier error: attestation token verification failed") from None

    def verify_document(self, token: str, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """(header, claims) of a signed document other than a token (an attestation report): signature and chain as
        for a token, no time claims; `TokenVerifierError` with the reason."""
        parsed = self._verify_signature(token, now)
        return parsed.header, parsed.claims

    def _verify(self, token: str, now: float) -> dict[str, Any]:
        parsed = self._verify_signature(token, now)
        claims = parsed.claims
        check_time_claims(claims, now, TokenVerifierError)
        if "jwk" not in parsed.header:  # a JWK-set token: an ITA one gets the EAR-shaped view
            claims = with_ear_view(claims)
        return claims

    def _verify_signature(self, token: str, now: float) -> CompactJws:
        segment = token.partition(".")[0]
        cached = self._signers.get(segment)
        parsed = parse_compact(token, TokenVerifierError, None if cached is None else cached.header)
        if cached is None and "jwk" not in parsed.header:
            self._verify_by_kid(parsed, now)
            return parsed
        signer = cached if cached is not None else self._signer(segment, parsed.header)
        if not self.trust.insecure_header_jwk and signer.point not in self._trusted_keys:
            self._check_endorsement(signer, now)
        verify_es256(parsed, signer.key, TokenVerifierError)
        return parsed

    def _verify_by_kid(self, parsed: CompactJws, now: float) -> None:
        """The signature under the trusted JWK the header `kid` names, with that JWK's algorithm."""
        kid = header_kid(parsed.header)
        if kid is None:
            raise TokenVerifierError("token header has neither jwk nor kid")
        if not self.trust.jwk_sets:
            raise TokenVerifierError("token header has no jwk and no trusted JWK set is configured (trusted_jwk_sets)")
        key = self._jwk(kid, parsed.header.get("alg"))
        if key is None:
            if any(ring.has_kid(kid) for ring in self.trust.jwk_sets):
                raise TokenVerifierError(f"the trusted JWK {kid[:24]!r} is not for alg {clip_repr(parsed.header.get('alg'))}")
            raise TokenVerifierError(f"no trusted JWK has kid {kid[:24]!r}")
        if not key.current_at(now):
            raise TokenVerifierError(f"the x5c chain of JWK {kid[:24]!r} is not valid now ({window_text(key)})")
        verify_signature(parsed, key.key, key.alg, TokenVerifierError)

    def _signer(self, segment: str, header: dict[str, Any]) -> _Signer:
        """The key and chain digest of `header`, remembered under its base64url text `segment`."""
        header_jwk = header.get("jwk")
        if not isinstance(header_jwk, dict):
            raise TokenVerifierError("token header has no jwk (JWK-set lookup by kid is not supported)")
        point = _ec_point(header_jwk)
        ders: tuple[bytes, ...] = ()
        digest = b""
        if not self.trust.insecure_header_jwk and point not in self._trusted_keys:
            ders = tuple(_x5c_ders(header_jwk.get("x5c")))
            digest = hashlib.sha256(self._anchor_digest + b"".join(hashlib.sha256(d).digest() for d in ders)).digest()
        signer = _Signer(header, point, self._header_key(point), digest, ders)
        self._signers.put(segment, signer)
        return signer

    def _header_key(self, point: bytes) -> ec.EllipticCurvePublicKey:
        cached = self._keys.get(point)
        if cached is None:
            try:
                cached = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except ValueError:
                raise TokenVerifierError("header jwk is not a valid P-256 key") from None
            self._keys.put(point, cached)
        return cached

    def _check_endorsement(self, signer: _Signer, now: float) -> None:
        digest = signer.chain_digest
        cached = self.chain_cache.get(digest)
        if cached is not None and cached.covers(now):
            if cached.leaf_point != signer.point:
                raise TokenVerifierError("x5c[0] does not hold the header jwk key")
            return
        if cached is not None:
            self.chain_cache.discard(digest)
        validated = self._validate_chain([_der_certificate(d) for d in signer.ders], signer.point, now)
        self.chain_cache.put(digest, validated)

    def _validate_chain(self, chain: list[x509.Certificate], point: bytes, now: float) -> _ValidatedChain:
        leaf_point = _p256_point(chain[0].public_key())
        if leaf_point != point:
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
            path = verifier.verify(chain[0], chain[1:]).chain
        except VerificationError as exc:
            raise TokenVerifierError(f"x5c chain does not verify: {exc}") from None
        return _ValidatedChain(
            leaf_point,
            max(c.not_valid_before_utc.timestamp() for c in path),
            min(c.not_valid_after_utc.timestamp() for c in path),
        )

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


def _ec_point(value: dict[str, Any]) -> bytes:
    """The header jwk's uncompressed P-256 point (on-curve check is left to `from_encoded_point`)."""
    if value.get("kty") != "EC" or value.get("crv") != "P-256":
        raise TokenVerifierError("header jwk must be an EC P-256 key")
    if value.get("alg", TOKEN_ALG) != TOKEN_ALG:
        raise TokenVerifierError("header jwk alg must be ES256")
    try:
        x, y = (url_decode(str(value.get(c, "")), f"jwk.{c}") for c in "xy")
    except MalformedRequestError:
        raise TokenVerifierError("header jwk is not a valid P-256 key") from None
    if len(x) != 32 or len(y) != 32:
        raise TokenVerifierError("header jwk is not a valid P-256 key")
    return b"\x04" + x + y


def _x5c_ders(value: object) -> list[bytes]:
    if not isinstance(value, list) or not value or len(value) > MAX_CHAIN_LENGTH:
        raise TokenVerifierError("header jwk has no usable x5c chain")
    ders = []
    for item in value:
        if not isinstance(item, str):
            raise TokenVerifierError("x5c entries must be strings")
        ders.append(_der_bytes(item))
    return ders


def _der_bytes(text: str) -> bytes:
    """Standard base64 per RFC 7517; URL-safe accepted as upstream does."""
    try:
        if set(text) & set("-_"):
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TokenVerifierError("x5c entry is not a base64 DER certificate") from None


def _der_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise TokenVerifierError("x5c entry is not a base64 DER certificate") from None


def _p256_point(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return b""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


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
