"""Flattened JWE encryption (RFC 7516) to a TEE public key, with direct `cryptography` calls.

Content encryption is A256GCM (RFC 7518 5.3) with a random 256-bit CEK and
96-bit IV, the base64url protected header as AAD. The CEK is protected by
ECDH-ES+A256KW (RFC 7518 4.6: an ephemeral key on the recipient's curve,
Concat KDF over SHA-256 with AlgorithmID "ECDH-ES+A256KW", empty
PartyUInfo/PartyVInfo, keydatalen 256, then AES key wrap, RFC 3394),
RSA-OAEP-256 (OAEP, SHA-256, MGF1-SHA-256) or RSA1_5 (PKCS #1 v1.5).

The protected header is compact JSON `{"alg":…,"enc":"A256GCM"}` with, for
ECDH-ES, `"epk":{"crv":…,"kty":"EC","x":…,"y":…}` appended: the same bytes
jwcrypto produced before this module replaced it, where upstream guests
read `epk`. Keys are the `cryptography` objects the caller parsed; no
validation of the JWK happens here (see `trustee_common.jose`).
"""

from __future__ import annotations

import json
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from trustee_common.b64 import url_encode

EC_ALG = "ECDH-ES+A256KW"
CONTENT_ENCRYPTION = "A256GCM"
CEK_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

RecipientKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def encrypt(key: RecipientKey, alg: str, plaintext: bytes) -> dict[str, str]:
    """The flattened JWE JSON object; `ValueError` for an alg the key cannot serve."""
    cek = os.urandom(CEK_BYTES)
    header: dict[str, object] = {"alg": alg, "enc": CONTENT_ENCRYPTION}
    if isinstance(key, ec.EllipticCurvePublicKey):
        if alg != EC_ALG:
            raise ValueError(f"alg {alg} does not apply to an EC key")
        epk, encrypted_key = _ecdh_es_a256kw(key, cek)
        header["epk"] = epk
    else:
        encrypted_key = key.encrypt(cek, _rsa_padding(alg))
    protected = url_encode(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": url_encode(encrypted_key),
        "iv": url_encode(iv),
        "ciphertext": url_encode(sealed[:-TAG_BYTES]),
        "tag": url_encode(sealed[-TAG_BYTES:]),
    }


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA-OAEP-256":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    raise ValueError(f"alg {alg} does not apply to an RSA key")


def _ecdh_es_a256kw(key: ec.EllipticCurvePublicKey, cek: bytes) -> tuple[dict[str, str], bytes]:
    if key.curve.name not in _CURVE_NAMES:
        raise ValueError(f"curve {key.curve.name} is not supported")
    ephemeral = ec.generate_private_key(key.curve)
    shared = ephemeral.exchange(ec.ECDH(), key)
    kek = ecdh_es_a256kw_kek(shared)
    crv, x, y = ec_point(ephemeral.public_key())
    return {"crv": crv, "kty": "EC", "x": x, "y": y}, aes_key_wrap(kek, cek)


def ec_point(key: ec.EllipticCurvePublicKey) -> tuple[str, str, str]:
    """(JWK `crv`, `x`, `y`) of an EC public key: base64url coordinates at the curve's full width (RFC 7518 6.2.1)."""
    size = (key.curve.key_size + 7) // 8
    numbers = key.public_numbers()
    return _CURVE_NAMES[key.curve.name], url_encode(numbers.x.to_bytes(size, "big")), url_encode(numbers.y.to_bytes(size, "big"))


def ecdh_es_a256kw_kek(shared: bytes) -> bytes:
    """The A256KW key-wrapping key from an ECDH shared secret (RFC 7518 4.6: Concat KDF, SHA-256, AlgorithmID = alg)."""
    return ConcatKDFHash(hashes.SHA256(), length=CEK_BYTES, otherinfo=_other_info(EC_ALG, CEK_BYTES * 8)).derive(shared)


def _other_info(algorithm_id: str, keydatalen_bits: int) -> bytes:
    """RFC 7518 4.6.2 OtherInfo with empty PartyUInfo and PartyVInfo."""
    alg = algorithm_id.encode("ascii")
    return struct.pack(">I", len(alg)) + alg + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", keydatalen_bits)
