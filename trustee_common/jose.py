"""TEE keys and the JWE envelope that carries resources to a guest.

The KBS encrypts each released resource to the `tee-pubkey` the guest bound
into its evidence (trustee-server.md 2.5.4): RFC 7516 flattened JSON,
`enc` A256GCM, `alg` ECDH-ES+A256KW (P-256, P-521), RSA-OAEP-256, or the
deprecated RSA1_5 (accepted with a logged warning). This module validates
the JWKs; `trustee_common.jwe_encrypt` does the encryption with direct
`cryptography` calls (`epk` in the protected header, where upstream guests
read it); the guest side (`TeeKeyPair.decrypt`) opens the KBS's EC
envelopes the same way (`trustee_common.jwe_decrypt`) and anything else
with jwcrypto.

Every accepted key is usable for the release code path: an EC key is
parsed by `cryptography` (which checks the point is on the curve: nothing
else can make ECDH-ES fail), and an RSA key, whose modulus and exponent
are only range-checked, is proven by encrypting a probe. The parsed key of
each key that passed is kept in a bounded LRU (`KEY_CACHE_SIZE`) under the
SHA-256 of its canonical public members, so a key seen at /attest is
neither parsed nor probed again at each release; the JWK checks themselves
run every time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException

from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError, TrusteeError
from trustee_common.jwe_decrypt import open_ec
from trustee_common.jwe_encrypt import CONTENT_ENCRYPTION, EC_ALG, RecipientKey, ec_point
from trustee_common.jwe_encrypt import encrypt as jwe_encrypt
from trustee_common.lru import BoundedLru

logger = logging.getLogger(__name__)

RSA_ALGS = ("RSA-OAEP-256", "RSA1_5")
EC_COORDINATE_BYTES = {"P-256": 32, "P-521": 66}
RSA_MIN_BITS = 2048
#: OpenSSL's limits for RSA public operations (OPENSSL_RSA_MAX_MODULUS_BITS, a 64-bit exponent above 3072 bits).
RSA_MAX_BITS = 16384
RSA_MAX_EXPONENT_BITS = 64

#: The guest-side `tee_key_algorithm` names (guest-components.md 2.4).
KEY_ALGORITHMS = ("ECDH-ES+A256KW-P256", "ECDH-ES+A256KW-P521", "RSA-OAEP-256")
KEY_CACHE_SIZE = 256
_KEY_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "alg")
_CURVES = {"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}


class JweError(TrusteeError):
    variant = "JweError"


@dataclass(frozen=True)
class TeePubKey:
    """A validated `tee-pubkey` JWK. `jwk` is the object exactly as received."""

    jwk: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.jwk["alg"])

    @classmethod
    def from_json(cls, value: object, field: str = "tee-pubkey") -> TeePubKey:
        if not isinstance(value, dict):
            raise MalformedRequestError(f"{field}: must be a JWK object")
        kty = value.get("kty")
        if kty == "EC":
            coords = _check_ec_shape(value, field)
        elif kty == "RSA":
            _check_rsa(value, field)
        else:
            raise MalformedRequestError(f"{field}: unsupported kty {kty!r} (EC or RSA)")
        key = cls(dict(value))
        if _USABLE_KEYS.get(key.digest) is None:
            if kty == "EC":
                _USABLE_KEYS.put(key.digest, _ec_point(value["crv"], coords, field))
            else:
                _check_usable(key, field)
        return key

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of the members encryption depends on."""
        members = {k: self.jwk[k] for k in _KEY_MEMBERS if k in self.jwk}
        return hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()

    def encrypt(self, plaintext: bytes, *, quiet: bool = False) -> dict[str, str]:
        """Encrypt `plaintext` to this key; returns the flattened JWE JSON object."""
        if self.alg == "RSA1_5" and not quiet:
            logger.warning("encrypting to a deprecated RSA1_5 TEE key")
        digest = self.digest
        recipient = _USABLE_KEYS.get(digest)
        try:
            if recipient is None:
                recipient = _recipient_key(self.jwk)
            envelope = jwe_encrypt(recipient, self.alg, plaintext)
        except (MalformedRequestError, ValueError, TypeError, OverflowError) as exc:
            raise JweError(f"JWE encryption failed: {exc}") from exc
        _USABLE_KEYS.put(digest, recipient)
        return envelope


#: Parsed keys that encrypted successfully, by `TeePubKey.digest`.
_USABLE_KEYS: BoundedLru[bytes, RecipientKey] = BoundedLru(KEY_CACHE_SIZE)


def _recipient_key(value: dict[str, Any]) -> RecipientKey:
    if value.get("kty") == "EC":
        x, y = (url_decode(str(value.get(c, "")), f"tee-pubkey.{c}") for c in "xy")
        curve = _CURVES.get(str(value.get("crv")))
        if curve is None:
            raise ValueError(f"unsupported curve {value.get('crv')!r}")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    n, e = (int.from_bytes(url_decode(str(value.get(c, "")), f"tee-pubkey.{c}"), "big") for c in "ne")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _check_ec_shape(value: dict[str, Any], field: str) -> tuple[bytes, bytes]:
    """The coordinates of an EC JWK of a supported curve and alg (whether the point is on the curve: `_ec_point`)."""
    crv = value.get("crv")
    if crv not in EC_COORDINATE_BYTES:
        raise MalformedRequestError(f"{field}: unsupported curve {crv!r} (P-256 or P-521)")
    if value.get("alg") != EC_ALG:
        raise MalformedRequestError(f"{field}: EC keys need alg {EC_ALG}")
    size = EC_COORDINATE_BYTES[crv]
    x, y = (url_decode(value.get(c, ""), f"{field}.{c}") if isinstance(value.get(c), str) else b"" for c in "xy")
    if len(x) != size or len(y) != size:
        raise MalformedRequestError(f"{field}: x and y must be {size}-byte coordinates")
    return x, y


def _ec_point(crv: str, coords: tuple[bytes, bytes], field: str) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[crv], b"\x04" + coords[0] + coords[1])
    except ValueError:
        raise MalformedRequestError(f"{field}: point is not on {crv}") from None


def _check_rsa(value: dict[str, Any], field: str) -> None:
    """A usable RSA public key: judged by the modulus's value, not its encoded length."""
    if value.get("alg") not in RSA_ALGS:
        raise MalformedRequestError(f"{field}: RSA keys need alg RSA-OAEP-256 or RSA1_5")
    for name in ("n", "e"):
        if not isinstance(value.get(name), str):
            raise MalformedRequestError(f"{field}: missing {name}")
    n = int.from_bytes(url_decode(value["n"], f"{field}.n"), "big")
    e = int.from_bytes(url_decode(value["e"], f"{field}.e"), "big")
    bits = n.bit_length()
    if bits < RSA_MIN_BITS:
        raise MalformedRequestError(f"{field}: RSA modulus is {bits} bits, at least {RSA_MIN_BITS} required")
    if bits > RSA_MAX_BITS:
        raise MalformedRequestError(f"{field}: RSA modulus is {bits} bits, at most {RSA_MAX_BITS} supported")
    if n % 2 == 0:
        raise MalformedRequestError(f"{field}: RSA modulus is even")
    if e < 3 or e % 2 == 0 or e >= n:
        raise MalformedRequestError(f"{field}: RSA public exponent {_short(e)} is invalid (must be odd, >= 3 and < n)")
    if e.bit_length() > RSA_MAX_EXPONENT_BITS:
        raise MalformedRequestError(f"{field}: RSA public exponent longer than {RSA_MAX_EXPONENT_BITS} bits is not supported")


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"of {number.bit_length()} bits"


def _check_usable(key: TeePubKey, field: str) -> None:
    """Encrypt a probe to an RSA `key` with the release code path, so a key /attest accepts never fails at release."""
    try:
        key.encrypt(b"probe", quiet=True)
    except JweError as exc:
        raise MalformedRequestError(f"{field}: key is unusable for JWE encryption ({exc.detail})") from None


class TeeKeyPair:
    """The guest's ephemeral key pair: its JWK goes into runtime data, it opens JWEs.

    An EC pair is a `cryptography` key and opens the KBS's envelopes with
    `trustee_common.jwe_decrypt`; jwcrypto (an RSA key, or an envelope of
    another shape) is the general path."""

    def __init__(self, key: jwk.JWK | None, alg: str, *, ec_private: ec.EllipticCurvePrivateKey | None = None) -> None:
        if key is None and ec_private is None:
            raise ValueError("a TEE key pair needs a JWK or an EC private key")
        self._jwk = key
        self._ec = ec_private
        self.alg = alg

    @property
    def _key(self) -> jwk.JWK:
        """The jwcrypto form, made when first needed."""
        if self._jwk is None:
            self._jwk = jwk.JWK.from_pyca(self._ec)
        return self._jwk

    @classmethod
    def generate(cls, algorithm: str = "ECDH-ES+A256KW-P256") -> TeeKeyPair:
        if algorithm == "ECDH-ES+A256KW-P256":
            return cls(None, EC_ALG, ec_private=ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "ECDH-ES+A256KW-P521":
            return cls(None, EC_ALG, ec_private=ec.generate_private_key(ec.SECP521R1()))
        if algorithm in RSA_ALGS:
            return cls(jwk.JWK.generate(kty="RSA", size=2048), algorithm)
        raise MalformedRequestError(f"unsupported TEE key algorithm {algorithm!r}")

    @classmethod
    def from_pem(cls, pem: bytes, rsa_alg: str = "RSA-OAEP-256") -> TeeKeyPair:
        """Load a PKCS#8 EC key or a PKCS#1/PKCS#8 RSA key (upstream `tee_keypair`)."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise MalformedRequestError(f"TEE key is not a PEM private key: {exc}") from exc
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp521r1"):
            return cls(None, EC_ALG, ec_private=key)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
            return cls(jwk.JWK.from_pyca(key), rsa_alg)
        raise MalformedRequestError("TEE key must be EC P-256, EC P-521 or RSA >= 2048")

    def public_jwk(self) -> dict[str, Any]:
        """The `tee-pubkey` object, with upstream's key set."""
        if self._ec is not None:
            crv, x, y = ec_point(self._ec.public_key())
            return {"kty": "EC", "crv": crv, "x": x, "y": y, "alg": self.alg}
        public: dict[str, Any] = json.loads(self._key.export_public())
        keep = ("kty", "crv", "x", "y") if public["kty"] == "EC" else ("kty", "n", "e")
        result = {k: public[k] for k in keep}
        result["alg"] = self.alg
        return result

    def to_pem(self) -> bytes:
        """PKCS#1 for RSA, PKCS#8 for EC, as upstream AA's `tee_keypair`."""
        if self._ec is not None:
            return self._ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        key = self._key.get_op_key("decrypt") if self._key["kty"] == "RSA" else self._key.get_op_key("unwrapKey")
        fmt = serialization.PrivateFormat.TraditionalOpenSSL if self._key["kty"] == "RSA" else serialization.PrivateFormat.PKCS8
        return bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))

    def decrypt(self, envelope: dict[str, Any]) -> bytes:
        """Open a flattened JWE produced by `TeePubKey.encrypt` (or by upstream Trustee)."""
        if self._ec is not None:
            try:
                opened = open_ec(self._ec, envelope)
            except ValueError as exc:
                raise JweError(f"cannot decrypt the resource envelope: {exc}") from None
            if opened is not None:
                return opened
        token = jwe.JWE()
        token.allowed_algs = [EC_ALG, *RSA_ALGS, CONTENT_ENCRYPTION]
        try:
            token.deserialize(json.dumps(envelope), key=self._key)
        except (JWException, ValueError, TypeError, KeyError) as exc:
            raise JweError(f"cannot decrypt the resource envelope: {exc}") from exc
        return bytes(token.payload)
