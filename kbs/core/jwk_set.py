"""Token-signing keys looked up by `kid` in JWK sets (trustee-server.md 2.5.2; Intel Trust Authority's `/certs`).

A token whose header has no `jwk` is verified with the key its header
`kid` names in a trusted JWK set (`[attestation_token] trusted_jwk_sets`,
and Intel Trust Authority's `certs_file`). `parse_jwk_set` turns the JSON
of a set into `TrustedJwk`s:

* each key needs `kid`, `kty` and `alg`; the algorithm is the JWK's
  (upstream takes it from the JWK, never from the token), and it must be
  one of `ALLOWED_ALGS` and fit the key type and size (RSA >= 2048 bits
  for RS*/PS*, P-256/P-384 for ES256/ES384); symmetric keys are refused;
* a key carrying `x5c` must hold the same public key as `x5c[0]`, and
  each certificate of the chain must be signed by the next one; the
  chain's validity window (latest `notBefore`, earliest `notAfter`) is kept
  and checked at verification time. (No configured root: Intel's JWKS is
  trusted as fetched over HTTPS, as upstream does.)
* keys that fail are skipped with a reason (`JwkSet.skipped`); a set that
  yields no key at all is an error. One `kid` may appear once per
  algorithm (ITA's set lists its key for PS384 and for RS256); the token's
  header `alg` picks among them.

`KeyRing` is the mutable holder the KBS verifies against: its adapter
(`kbs.jwks`) replaces its keys when a source is fetched again. Nothing here
does I/O; times are explicit.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk
from jwcrypto.common import JWException

from kbs.core.admin_keys import jwk_set_entries
from trustee_common.errors import ConfigError

MAX_CHAIN = 8
MIN_RSA_BITS = 2048
ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384"}


@dataclass(frozen=True)
class TrustedJwk:
    kid: str
    alg: str
    key: jwk.JWK
    #: The x5c chain's validity window (POSIX seconds); (-inf, inf) without x5c.
    not_before: float = float("-inf")
    not_after: float = float("inf")

    def current_at(self, now: float) -> bool:
        return self.not_before <= now <= self.not_after


KeyId = tuple[str, str]
"""(kid, alg)."""


@dataclass(frozen=True)
class JwkSet:
    keys: dict[KeyId, TrustedJwk]
    #: One line per key left out, with the reason.
    skipped: tuple[str, ...] = ()


@dataclass
class KeyRing:
    """The keys of one or more JWK-set sources, by (kid, alg); replaced as a whole on refresh."""

    keys: dict[KeyId, TrustedJwk] = field(default_factory=dict)

    def get(self, kid: str, alg: object) -> TrustedJwk | None:
        """The key for a header's `kid` and `alg`."""
        return self.keys.get((kid, alg)) if isinstance(alg, str) else None

    def has_kid(self, kid: str) -> bool:
        return any(k == kid for k, _ in self.keys)


def parse_jwk_set(data: bytes, where: str) -> JwkSet:
    """The usable keys of a JWK set `{"keys": [...]}`; `ConfigError` naming `where` if there are none."""
    entries = jwk_set_entries(data, where)
    keys: dict[KeyId, TrustedJwk] = {}
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        try:
            key = _entry(entry)
        except ValueError as exc:
            skipped.append(f"{where} keys[{index}]: {exc}")
            continue
        if (key.kid, key.alg) in keys:
            skipped.append(f"{where} keys[{index}]: kid {key.kid[:16]}... with alg {key.alg} repeats an earlier key")
            continue
        keys[(key.kid, key.alg)] = key
    if not keys:
        raise ConfigError(f"{where}: no usable key ({'; '.join(skipped)})")
    return JwkSet(keys, tuple(skipped))


def _entry(entry: object) -> TrustedJwk:
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kid, alg = entry.get("kid"), entry.get("alg")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise ValueError("a JWK needs a string kid")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        raise ValueError(f"alg {str(alg)[:16]!r} is not one of {', '.join(sorted(ALLOWED_ALGS))}")
    if entry.get("kty") not in ("RSA", "EC"):
        raise ValueError(f"kty {str(entry.get('kty'))[:16]!r} is not RSA or EC")
    if entry.get("use", "sig") != "sig":
        raise ValueError("not a signature key (use)")
    members = {k: v for k, v in entry.items() if k in ("kty", "kid", "alg", "n", "e", "crv", "x", "y")}
    try:
        public = jwk.JWK(**members).get_op_key("verify")
    except (JWException, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a usable public JWK ({exc})") from None
    _check_alg(public, alg)
    not_before, not_after = float("-inf"), float("inf")
    if "x5c" in entry:
        not_before, not_after = _check_x5c(entry["x5c"], public)
    return TrustedJwk(kid, alg, jwk.JWK.from_pyca(public), not_before, not_after)


def _check_alg(public: object, alg: str) -> None:
    if isinstance(public, rsa.RSAPublicKey):
        if not alg.startswith(("RS", "PS")):
            raise ValueError(f"alg {alg} does not fit an RSA key")
        if public.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {public.key_size} bits (at least {MIN_RSA_BITS})")
        return
    if isinstance(public, ec.EllipticCurvePublicKey) and _EC_ALG.get(public.curve.name) == alg:
        return
    raise ValueError(f"alg {alg} does not fit the key type")


def _der(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("x5c entries must be strings")
    try:
        if set(text) & set("-_"):
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("x5c entry is not base64 DER") from None


def _check_x5c(value: object, public: object) -> tuple[float, float]:
    """x5c[0] holds `public`; each certificate is signed by the next; the chain's validity window."""
    if not isinstance(value, list) or not value or len(value) > MAX_CHAIN:
        raise ValueError(f"x5c must list 1..{MAX_CHAIN} certificates")
    try:
        chain = [x509.load_der_x509_certificate(_der(item)) for item in value]
    except ValueError as exc:
        raise ValueError(f"x5c: {exc}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if not hasattr(public, "public_bytes") or chain[0].public_key().public_bytes(*spki) != public.public_bytes(*spki):
        raise ValueError("x5c[0] does not hold the JWK's key")
    for child, issuer in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("x5c: a certificate is not signed by the next one") from None
    return (max(c.not_valid_before_utc.timestamp() for c in chain), min(c.not_valid_after_utc.timestamp() for c in chain))


def window_text(key: TrustedJwk) -> str:
    def fmt(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat() if abs(t) != float("inf") else "-"
    return f"{fmt(key.not_before)} .. {fmt(key.not_after)}"


def header_kid(header: dict[str, Any]) -> str | None:
    """The `kid` of a header without `jwk` (the JWK-set case), else None."""
    kid = header.get("kid")
    if "jwk" in header or not isinstance(kid, str) or not kid:
        return None
    return kid


def check_source(uri: str, where: str) -> str:
    """A source as configured: `https://...`, `file:///path` or a path; anything else is a `ConfigError`."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{where}: {uri!r}: file URIs must be local (file:///path)")
        return uri
    if parts.scheme and len(parts.scheme) > 1:
        raise ConfigError(f"{where}: {uri!r}: only https://, file:// and local paths are supported")
    if not uri:
        raise ConfigError(f"{where}: an empty path")
    return uri
