"""JWE recipients of a layer key: ocicrypt's `jwe` key wrapper (skopeo `--encryption-key jwe:KEY.pem`).

The layer annotation `org.opencontainers.image.enc.keys.jwe` holds
comma-separated standard-base64 values, each a JWE in JSON serialization
(go-jose `FullSerialize`: the general form with `recipients`, or the
flattened form for one recipient) whose plaintext is the layer's private
options. ocicrypt writes one JWE per layer for all recipients, content
encryption A256GCM, key management ECDH-ES+A256KW for EC public keys and
RSA-OAEP for RSA keys; `wrap_for_recipients` does the same.
`unwrap_with_private_keys` accepts what ocicrypt accepts: RSA-OAEP,
RSA-OAEP-256, ECDH-ES+A128KW/A192KW/A256KW, and every RFC 7518 content
encryption. Keys are PEM (SPKI public keys; PKCS#8 or traditional
unencrypted private keys). JOSE is done by jwcrypto. Pure: no I/O.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException, json_encode

from trustee_common.b64 import std_decode
from trustee_common.bounded import loads_json
from trustee_common.errors import ImageIntegrityError, MalformedRequestError

KEY_ALGORITHMS = ("RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW")
CONTENT_ALGORITHMS = ("A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512", "A128GCM", "A192GCM", "A256GCM")
MAX_RECIPIENTS = 64
MAX_VALUES = 64
MAX_JWE_BYTES = 256 * 1024
MAX_ANNOTATION_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048



def _public_key(pem: bytes, index: int) -> tuple[jwk.JWK, str]:
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise MalformedRequestError(f"recipient key {index}: not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return jwk.JWK.from_pyca(key), "ECDH-ES+A256KW"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise MalformedRequestError(f"recipient key {index}: RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} needed")
        return jwk.JWK.from_pyca(key), "RSA-OAEP"
    raise MalformedRequestError(f"recipient key {index}: {type(key).__name__} keys are not supported (EC or RSA)")


def wrap_for_recipients(plbco: bytes, public_keys_pem: list[bytes]) -> bytes:
    """One JWE (JSON serialization) of `plbco` for every key; the annotation value is its standard base64."""
    if not 0 < len(public_keys_pem) <= MAX_RECIPIENTS:
        raise MalformedRequestError(f"JWE recipients: between 1 and {MAX_RECIPIENTS} keys")
    token = jwe.JWE(plaintext=plbco, protected=json_encode({"enc": "A256GCM"}))
    for index, pem in enumerate(public_keys_pem, 1):
        key, alg = _public_key(pem, index)
        token.add_recipient(key, header=json_encode({"alg": alg}))
    return str(token.serialize(compact=False)).encode()


def _private_key(pem: bytes, index: int) -> jwk.JWK:
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise MalformedRequestError(f"private key {index}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise MalformedRequestError(f"private key {index}: {type(key).__name__} keys are not supported (EC or RSA)")
    return jwk.JWK.from_pyca(key)


def _jwe_values(annotation_value: str) -> list[str]:
    """The JWE JSON texts of a `org.opencontainers.image.enc.keys.jwe` annotation value."""
    if len(annotation_value) > MAX_ANNOTATION_BYTES:
        raise MalformedRequestError(f"JWE annotation: larger than {MAX_ANNOTATION_BYTES} bytes")
    parts = annotation_value.split(",")
    if len(parts) > MAX_VALUES:
        raise MalformedRequestError(f"JWE annotation: more than {MAX_VALUES} values")
    texts = []
    for index, part in enumerate(parts, 1):
        raw = std_decode(part.strip(), f"JWE annotation value {index}")
        doc = loads_json(raw, f"JWE annotation value {index}", max_bytes=MAX_JWE_BYTES, max_depth=8)
        if not isinstance(doc, dict) or "ciphertext" not in doc:
            raise MalformedRequestError(f"JWE annotation value {index}: not a JWE in JSON serialization")
        if len(doc.get("recipients", ())) > MAX_RECIPIENTS:
            raise MalformedRequestError(f"JWE annotation value {index}: more than {MAX_RECIPIENTS} recipients")
        texts.append(raw.decode("utf-8"))
    return texts


def unwrap_with_private_keys(annotation_value: str, private_keys_pem: list[bytes]) -> bytes:
    """The private options the first (JWE, key) pair that fits opens; `ImageIntegrityError` when none does."""
    texts = _jwe_values(annotation_value)
    keys = [_private_key(pem, index) for index, pem in enumerate(private_keys_pem, 1)]
    for text in texts:
        for key in keys:
            token = jwe.JWE(algs=[*KEY_ALGORITHMS, *CONTENT_ALGORITHMS])
            try:
                token.deserialize(text, key=key)
            except (JWException, ValueError, TypeError, KeyError):
                continue
            return bytes(token.payload)
    raise ImageIntegrityError(f"none of the {len(keys)} private keys opens the layer key "
                              f"({len(texts)} JWE value(s) in the annotation)")
