"""Stream a layer blob through ocicrypt's AES_256_CTR_HMAC_SHA256 cipher.

Encryption: a fresh 32-byte key and 16-byte nonce per layer; the
ciphertext is AES-256-CTR of the blob (the nonce is the initial 128-bit
big-endian counter block), and the HMAC-SHA256 keyed with the same
32-byte key is computed over the ciphertext (encrypt-then-MAC), exactly
as containers/ocicrypt's `blockcipher_aes_ctr.go` does, so skopeo opens
what we write and we open what skopeo writes.

Decryption checks two things: the HMAC over the ciphertext (compared in
constant time) and the digest of the plaintext against the digest the
private options carry. Both are known only at the end of the stream, and
the plaintext is written as it is produced: on `ImageIntegrityError` the
caller must discard whatever was written to `dst`. Memory use is one
chunk. Pure: the caller opens the files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from trustee_common.errors import ImageIntegrityError
from trustee_common.ocicrypt.options import NONCE_BYTES, SYMKEY_BYTES, PrivateLayerOptions, PublicLayerOptions

CHUNK_BYTES = 1024 * 1024


class Reader(Protocol):
    """What the functions read from: a binary file object (`BinaryIO`) or anything with `read(n)`."""

    def read(self, size: int, /) -> bytes: ...


class Writer(Protocol):
    """What the functions write to: a binary file object or anything with `write(data)`."""

    def write(self, data: bytes, /) -> int: ...


def _ctr(symkey: bytes, nonce: bytes) -> CipherContext:
    return Cipher(algorithms.AES(symkey), modes.CTR(nonce)).encryptor()  # CTR: encryption and decryption are the same


def encrypt_layer(src: Reader, dst: Writer, *, digest_algorithm: str = "sha256", symkey: bytes | None = None,
                  nonce: bytes | None = None) -> tuple[PrivateLayerOptions, PublicLayerOptions]:
    """Encrypt `src` into `dst`; the options that open it (with the plaintext digest) and that check it.

    `symkey` and `nonce` are for test vectors only; by default both are fresh random values.
    """
    symkey = os.urandom(SYMKEY_BYTES) if symkey is None else symkey
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(symkey) != SYMKEY_BYTES or len(nonce) != NONCE_BYTES or digest_algorithm not in ("sha256", "sha512"):
        raise ValueError(f"encrypt_layer: a {SYMKEY_BYTES}-byte key, a {NONCE_BYTES}-byte nonce, sha256 or sha512")
    cipher, mac, plain_digest = _ctr(symkey, nonce), hmac.new(symkey, digestmod="sha256"), hashlib.new(digest_algorithm)
    while chunk := src.read(CHUNK_BYTES):
        plain_digest.update(chunk)
        encrypted = cipher.update(chunk)
        mac.update(encrypted)
        dst.write(encrypted)
    dst.write(cipher.finalize())
    private = PrivateLayerOptions(symkey, nonce, f"{digest_algorithm}:{plain_digest.hexdigest()}")
    return private, PublicLayerOptions(mac.digest())


def decrypt_layer(src: Reader, dst: Writer, private: PrivateLayerOptions, public: PublicLayerOptions) -> None:
    """Decrypt `src` into `dst`; `ImageIntegrityError` (discard `dst`) when the HMAC or the plaintext digest differs."""
    algorithm = private.digest.split(":", 1)[0]
    cipher, mac, plain_digest = _ctr(private.symkey, private.nonce), hmac.new(private.symkey, digestmod="sha256"), hashlib.new(algorithm)
    while chunk := src.read(CHUNK_BYTES):
        mac.update(chunk)
        plain = cipher.update(chunk)
        plain_digest.update(plain)
        dst.write(plain)
    dst.write(cipher.finalize())
    if not hmac.compare_digest(mac.digest(), public.hmac):
        raise ImageIntegrityError("encrypted layer: the HMAC of the ciphertext differs from the one in its pubopts "
                                  "(the layer or its annotation was altered, or the key is not this layer's)")
    actual = f"{algorithm}:{plain_digest.hexdigest()}"
    if not hmac.compare_digest(actual, private.digest):
        raise ImageIntegrityError(f"encrypted layer: the decrypted blob has digest {actual}, its key options say {private.digest}")
