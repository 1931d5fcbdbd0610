"""TPM-bound TEE keys: an RSA-2048 decryption key that lives in the TPM (docs/tpm-bound-keys.md).

`TpmKeyPair` is a `TeeKeyPair` whose private half never leaves the TPM.
It is created with TPM2_Create under the owner (storage) hierarchy's
standard primary (the TSS2 key-file parent, re-derived from the owner seed
on every use), attributes fixedTPM | fixedParent | sensitiveDataOrigin |
userWithAuth | decrypt (not sign, not restricted), scheme NULL, exponent
65537. What the process keeps is the TPM2B_PUBLIC and the TPM2B_PRIVATE
that only this TPM can load (wrapped by the storage primary), in the
tpm2-tss / tpm2-openssl "TSS2 PRIVATE KEY" PEM format; `to_pem()` returns
that, so the AA can hand the key to the CDH in its `GetToken("kbs")`
reply as it does a software key.

Lifetime: one key per KBS token (like the software TEE key), loaded for
each TPM operation (TPM2_Certify at attestation, TPM2_RSA_Decrypt per
resource) and flushed straight after: nothing is persisted, no
persistent handle or NV space is used, and the key is gone with the
token. `decrypt` opens the KBS's RSA-OAEP-256 / A256GCM JWE: the CEK is
unwrapped by TPM2_RSA_Decrypt (OAEP, SHA-256, empty label), the content
is decrypted in software with that CEK.

tpm2-pytss is imported only when a key is created or used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwcrypto import jwk

from trustee_common.b64 import url_decode, url_encode
from trustee_common.bounded import loads_json
from trustee_common.errors import AttestationError, MalformedRequestError, TrusteeError
from trustee_common.jose import JweError, TeeKeyPair

ALG = "RSA-OAEP-256"
ENC = "A256GCM"
PEM_LABEL = b"TSS2 PRIVATE KEY"
CEK_BYTES = 32
KEY_BITS = 2048


def open_esapi(tcti: str) -> Any:
    try:
        from tpm2_pytss import ESAPI
    except ImportError as exc:
        raise AttestationError(f"tpm: tpm2-pytss is not usable ({exc})") from None
    try:
        return ESAPI(tcti)
    except Exception as exc:
        raise AttestationError(f"tpm: cannot open TCTI {tcti!r}: {exc}") from None


def key_template() -> Any:
    """TPMT_PUBLIC of the bound key: RSA-2048 decrypt-only, fixedTPM/fixedParent, scheme NULL."""
    from tpm2_pytss import TPMA_OBJECT, TPMS_RSA_PARMS, TPMT_PUBLIC, TPMT_RSA_SCHEME, TPMT_SYM_DEF_OBJECT, TPMU_PUBLIC_PARMS
    from tpm2_pytss.constants import TPM2_ALG

    attributes = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
                  | TPMA_OBJECT.DECRYPT)
    return TPMT_PUBLIC(
        type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes, authPolicy=b"",
        parameters=TPMU_PUBLIC_PARMS(rsaDetail=TPMS_RSA_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL), scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
            keyBits=KEY_BITS, exponent=0,
        )),
    )


class TpmKeyPair(TeeKeyPair):
    """A TEE key pair whose private key is TPM-resident; see the module docstring."""

    def __init__(self, tcti: str, tss_key: Any) -> None:
        self.tcti = tcti
        self._tss = tss_key
        area = tss_key.public.publicArea
        n = bytes(area.unique.rsa)
        e = int(area.parameters.rsaDetail.exponent) or 65537
        public = jwk.JWK(kty="RSA", n=url_encode(n), e=url_encode(e.to_bytes((e.bit_length() + 7) // 8, "big")))
        super().__init__(public, ALG)

    @classmethod
    def create(cls, tcti: str) -> TpmKeyPair:
        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss.tsskey import TSSPrivKey

        esapi = open_esapi(tcti)
        try:
            return cls(tcti, TSSPrivKey.create(esapi, key_template()))
        except TSS2_Exception as exc:
            raise AttestationError(f"tpm: cannot create the bound TEE key: {exc}") from None
        finally:
            esapi.close()

    @classmethod
    def from_pem(cls, pem: bytes, rsa_alg: str = ALG, *, tcti: str | None = None) -> TpmKeyPair:
        """A "TSS2 PRIVATE KEY" PEM (as `to_pem` writes) for the TPM at `tcti`."""
        from tpm2_pytss.tsskey import TSSPrivKey

        if tcti is None:
            raise MalformedRequestError("a TPM-bound TEE key needs the TPM's TCTI (AA_TPM_TCTI or a /dev/tpm* device)")
        try:
            return cls(tcti, TSSPrivKey.from_pem(pem))
        except (ValueError, TypeError, AttributeError) as exc:
            raise MalformedRequestError(f"TEE key is not a TSS2 PRIVATE KEY PEM: {exc}") from None

    def tpmt_public(self) -> bytes:
        """The key's marshalled TPMT_PUBLIC (its Name is nameAlg || SHA-256 of these bytes)."""
        return bytes(self._tss.public.publicArea.marshal())

    def public_jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(self._key.export_public())
        return {"kty": "RSA", "n": public["n"], "e": public["e"], "alg": self.alg}

    def to_pem(self) -> bytes:
        return bytes(self._tss.to_pem())

    def load(self, esapi: Any) -> Any:
        """Load the key under the storage primary (the caller flushes the returned handle)."""
        return self._tss.load(esapi)

    def unwrap(self, encrypted_key: bytes) -> bytes:
        """TPM2_RSA_Decrypt (OAEP, SHA-256, empty label) of `encrypted_key` with the TPM-resident key."""
        from tpm2_pytss import TPM2B_DATA, TPM2B_PUBLIC_KEY_RSA, TPMS_SCHEME_HASH, TPMT_RSA_DECRYPT, TPMU_ASYM_SCHEME, TSS2_Exception
        from tpm2_pytss.constants import TPM2_ALG

        scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP, details=TPMU_ASYM_SCHEME(oaep=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)))
        esapi = open_esapi(self.tcti)
        try:
            handle = self.load(esapi)
            try:
                return bytes(esapi.rsa_decrypt(handle, TPM2B_PUBLIC_KEY_RSA(encrypted_key), scheme, TPM2B_DATA()))
            finally:
                esapi.flush_context(handle)
        except TSS2_Exception as exc:
            raise JweError(f"cannot decrypt the resource envelope: the TPM refused the key unwrap ({exc})") from None
        finally:
            esapi.close()

    def decrypt(self, envelope: dict[str, Any]) -> bytes:
        """Open a flattened RSA-OAEP-256 / A256GCM JWE; the CEK is unwrapped inside the TPM."""
        try:
            protected = str(envelope["protected"])
            header = loads_json(url_decode(protected, "JWE protected"), "JWE protected header")
            if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC:
                raise JweError(f"cannot decrypt the resource envelope: a TPM-bound key opens only alg {ALG} with enc {ENC}")
            fields = {k: url_decode(str(envelope[k]), f"JWE {k}") for k in ("encrypted_key", "iv", "ciphertext", "tag")}
        except KeyError as exc:
            raise JweError(f"cannot decrypt the resource envelope: no {exc.args[0]!r}") from None
        except MalformedRequestError as exc:
            raise JweError(f"cannot decrypt the resource envelope: {exc.detail}") from None
        cek = self.unwrap(fields["encrypted_key"])
        if len(cek) != CEK_BYTES:
            raise JweError(f"cannot decrypt the resource envelope: the CEK is {len(cek)} bytes, A256GCM needs {CEK_BYTES}")
        aad = protected + ("." + str(envelope["aad"]) if "aad" in envelope else "")
        try:
            return AESGCM(cek).decrypt(fields["iv"], fields["ciphertext"] + fields["tag"], aad.encode("ascii"))
        except (InvalidTag, ValueError):
            raise JweError("cannot decrypt the resource envelope: A256GCM authentication failed") from None


def load_tee_key_pair(pem: bytes, environ: Mapping[str, str]) -> TeeKeyPair:
    """A TEE key pair from the AA's `tee_keypair` PEM: a TPM-bound key (TSS2 PRIVATE KEY) or a software key."""
    if PEM_LABEL not in pem:
        return TeeKeyPair.from_pem(pem)
    from guest.attesters.tpm import TpmSettings

    try:
        settings = TpmSettings.from_env(environ)
    except TrusteeError:
        settings = None
    return TpmKeyPair.from_pem(pem, tcti=None if settings is None else settings.tcti)
