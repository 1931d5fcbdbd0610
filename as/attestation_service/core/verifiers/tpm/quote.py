"""TPM quote checks shared by `tpm` and the Azure vTPM verifiers: signature, PCR digest, nonce, PCR 8.

Each function raises `TpmQuoteError` with a one-line reason; the callers
prefix the step. Pure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation_service.core.verifiers.steps import SkipStep
from attestation_service.core.verifiers.tpm.structures import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ALG_SHA256,
    HASHES,
    TPM_GENERATED_VALUE,
    TpmsAttest,
    TpmsCertify,
    TpmtSignature,
)
from trustee_common.errors import EvidenceError

PCR_COUNT = 24
NONCE_SIZE = 32
_CRYPTO_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    0x0004: hashes.SHA1, 0x000B: hashes.SHA256, 0x000C: hashes.SHA384, 0x000D: hashes.SHA512,
}

AkKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class TpmQuoteError(EvidenceError):
    """A TPM quote failed a check; the message names the step."""


#: A check that cannot run (no expected value); the step is reported as skipped.
SkipCheck = SkipStep


def load_ak(spki_der: bytes) -> AkKey:
    """An RSA or EC attestation key from DER SubjectPublicKeyInfo."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, TypeError):
        raise TpmQuoteError("ak_public is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise TpmQuoteError(f"ak_public is a {type(key).__name__}, not an RSA or EC key")
    return key


def check_header(attest: TpmsAttest) -> str:
    if attest.magic != TPM_GENERATED_VALUE:
        raise TpmQuoteError(f"magic {attest.magic:#010x} is not TPM_GENERATED_VALUE (0xff544347)")
    return f"TPMS_ATTEST quote, firmware {attest.firmware_version:#018x}, {len(attest.raw)} bytes"


def verify_signature(key: AkKey, message: bytes, sig: TpmtSignature) -> str:
    """The signature over the raw TPMS_ATTEST bytes, hashed with the scheme's hash."""
    algorithm = _CRYPTO_HASHES.get(sig.hash_alg)
    if algorithm is None:
        raise TpmQuoteError(f"signature hash algorithm {sig.hash_alg:#06x} is not supported")
    try:
        if sig.sig_alg in (ALG_RSASSA, ALG_RSAPSS):
            if not isinstance(key, rsa.RSAPublicKey):
                raise TpmQuoteError(f"{sig.scheme} signature but the AK is not an RSA key")
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15() if sig.sig_alg == ALG_RSASSA
                else padding.PSS(mgf=padding.MGF1(algorithm()), salt_length=padding.PSS.AUTO)
            )
            key.verify(sig.signature, message, pad, algorithm())
        elif sig.sig_alg == ALG_ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise TpmQuoteError("ECDSA signature but the AK is not an EC key")
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, message, ec.ECDSA(algorithm()))
        else:
            raise TpmQuoteError(f"signature scheme {sig.scheme} is not supported")
    except InvalidSignature:
        raise TpmQuoteError(f"the {sig.scheme} signature does not verify with the AK") from None
    return f"{sig.scheme}/{HASHES[sig.hash_alg][0].upper()} signature verified with the AK"


def parse_pcrs(values: object, where: str) -> list[bytes]:
    """24 hex SHA-256 PCR values."""
    if not isinstance(values, list) or len(values) != PCR_COUNT:
        raise TpmQuoteError(f"{where}: pcrs must be a list of {PCR_COUNT} hex strings")
    out: list[bytes] = []
    for index, value in enumerate(values):
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise TpmQuoteError(f"{where}: pcrs[{index}] is not 64 hex digits (a SHA-256 PCR)")
        out.append(raw)
    return out


def check_pcr_digest(attest: TpmsAttest, pcrs: Sequence[bytes], sig_hash_alg: int) -> str:
    """`pcrDigest == H_sig(selected PCRs in selection order)`; only the SHA-256 bank is supplied."""
    name = HASHES.get(sig_hash_alg, ("", 0))[0]
    if not name:
        raise TpmQuoteError(f"signature hash algorithm {sig_hash_alg:#06x} is not supported")
    selected: list[int] = []
    for selection in attest.selections:
        if selection.hash_alg != ALG_SHA256:
            raise TpmQuoteError(f"the quote selects bank {selection.hash_alg:#06x}; the evidence only carries SHA-256 PCRs")
        if any(i >= PCR_COUNT for i in selection.pcrs):
            raise TpmQuoteError(f"the quote selects PCRs beyond {PCR_COUNT - 1}")
        selected.extend(selection.pcrs)
    if not selected:
        raise TpmQuoteError("the quote selects no PCRs")
    digest = hashlib.new(name, b"".join(pcrs[i] for i in selected)).digest()
    if not hmac.compare_digest(digest, attest.pcr_digest):
        raise TpmQuoteError(f"the listed PCRs digest to {digest.hex()}, the quote's pcrDigest is {attest.pcr_digest.hex()}")
    return f"pcrDigest matches SHA-256 PCRs {_ranges(selected)}"


def check_nonce(attest: TpmsAttest | TpmsCertify, expected: bytes | None, *, size: int | None) -> str:
    """extraData equals `expected`, zero-padded/truncated to `size` bytes (or exactly, when `size` is None)."""
    if expected is None:
        raise SkipCheck("no expected report data: extraData not checked")
    want = expected if size is None else expected[:size].ljust(size, b"\0")
    if not hmac.compare_digest(attest.extra_data, want):
        rule = "exactly" if size is None else f"padded/truncated to {size} bytes"
        raise TpmQuoteError(f"extraData {attest.extra_data.hex()} does not equal the expected report data ({rule})")
    return "extraData equals the expected report data"


def expected_pcr8(init_data_hash: bytes) -> bytes:
    return hashlib.sha256(bytes(32) + init_data_hash).digest()


def check_init_data(pcrs: Sequence[bytes], init_data_hash: bytes | None) -> str:
    if init_data_hash is None:
        raise SkipCheck("no init data: PCR 8 not checked")
    want = expected_pcr8(init_data_hash)
    if not hmac.compare_digest(pcrs[8], want):
        raise TpmQuoteError(f"PCR 8 is {pcrs[8].hex()}, SHA-256(32 zero bytes || init-data digest) is {want.hex()}")
    return "PCR 8 == SHA-256(32 zero bytes || init-data digest)"


def _ranges(indices: Sequence[int]) -> str:
    out: list[str] = []
    for i in sorted(set(indices)):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)
