"""The TPM-bound TEE key check: TPM2_Certify of the `tee-pubkey` by the trusted AK (docs/tpm-bound-keys.md).

The evidence's optional `tee_pubkey_certify` = `{"public": <std b64
TPMT_PUBLIC>, "attest": <std b64 TPMS_ATTEST>, "signature": <std b64
TPMT_SIGNATURE>}` passes when, in this order: the TPMS_ATTEST has the
magic TPM_GENERATED_VALUE and type TPM_ST_ATTEST_CERTIFY; its signature
verifies with the AK the quote was trusted and verified under; its
extraData equals the expected report data padded/truncated to 32 bytes (as
the quote's); the certified Name equals nameAlg || H_nameAlg(TPMT_PUBLIC);
the TPMT_PUBLIC is an RSA key with fixedTPM, fixedParent,
sensitiveDataOrigin and decrypt set, sign and restricted clear; and its
modulus and exponent are the request's `tee-pubkey` (an RSA JWK). Any
failure refuses the evidence. Pure.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from attestation_service.core.verifiers.tpm.quote import AkKey, TpmQuoteError, check_nonce, verify_signature
from attestation_service.core.verifiers.tpm.structures import (
    ATTR_DECRYPT,
    ATTR_FIXED_PARENT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_SIGN,
    HASHES,
    TPM_GENERATED_VALUE,
    TpmtPublicRsa,
    parse_certify,
    parse_signature,
    parse_tpmt_public_rsa,
)
from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError

NONCE_SIZE = 32
#: Attributes a TPM-bound TEE key must have, and must not have.
REQUIRED_ATTRIBUTES = {"fixedTPM": ATTR_FIXED_TPM, "fixedParent": ATTR_FIXED_PARENT,
                       "sensitiveDataOrigin": ATTR_SENSITIVE_DATA_ORIGIN, "decrypt": ATTR_DECRYPT}
FORBIDDEN_ATTRIBUTES = {"sign": ATTR_SIGN, "restricted": ATTR_RESTRICTED}


@dataclass(frozen=True, slots=True)
class TeeKeyCertification:
    """The decoded `tee_pubkey_certify` evidence field."""

    public: bytes
    attest: bytes
    signature: bytes


def object_name(public: TpmtPublicRsa) -> bytes:
    """The TPM Name of an object: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC)."""
    algorithm = HASHES.get(public.name_alg)
    if algorithm is None:
        raise TpmQuoteError(f"the certified key's nameAlg {public.name_alg:#06x} is not supported")
    return public.name_alg.to_bytes(2, "big") + hashlib.new(algorithm[0], public.raw).digest()


def check_attributes(public: TpmtPublicRsa) -> None:
    missing = [name for name, bit in REQUIRED_ATTRIBUTES.items() if not public.attributes & bit]
    present = [name for name, bit in FORBIDDEN_ATTRIBUTES.items() if public.attributes & bit]
    if missing or present:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(present)}"] if present else [])
        raise TpmQuoteError(f"the certified key is not a TPM-bound decryption key: its attributes "
                            f"{public.attributes:#010x} {' and '.join(problems)}")


def _jwk_int(tee_pubkey: dict[str, Any], member: str) -> int:
    value = tee_pubkey.get(member)
    if not isinstance(value, str):
        raise TpmQuoteError(f"the tee-pubkey has no '{member}'")
    try:
        return int.from_bytes(url_decode(value, f"tee-pubkey.{member}"), "big")
    except MalformedRequestError as exc:
        raise TpmQuoteError(exc.detail) from None


def check_same_key(public: TpmtPublicRsa, tee_pubkey: object) -> None:
    """The certified RSA key is the request's `tee-pubkey`."""
    if not isinstance(tee_pubkey, dict):
        raise TpmQuoteError("the evidence certifies a TEE key but the request has no tee-pubkey in structured runtime data")
    if tee_pubkey.get("kty") != "RSA":
        raise TpmQuoteError(f"the evidence certifies an RSA key but the tee-pubkey is kty {tee_pubkey.get('kty')!r}")
    if _jwk_int(tee_pubkey, "n") != int.from_bytes(public.modulus, "big"):
        raise TpmQuoteError("the certified key's modulus is not the tee-pubkey's")
    if _jwk_int(tee_pubkey, "e") != public.exponent:
        raise TpmQuoteError(f"the certified key's exponent {public.exponent} is not the tee-pubkey's")


def check_certification(
    cert: TeeKeyCertification, ak: AkKey, report_data: bytes | None, tee_pubkey: object
) -> tuple[str, dict[str, Any]]:
    """`(detail, claims)` of a certification that passes; raises `TpmQuoteError` naming the first failed check."""
    attest = parse_certify(cert.attest)
    if attest.magic != TPM_GENERATED_VALUE:
        raise TpmQuoteError(f"certify magic {attest.magic:#010x} is not TPM_GENERATED_VALUE (0xff544347)")
    try:
        verify_signature(ak, cert.attest, parse_signature(cert.signature))
    except TpmQuoteError as exc:
        raise TpmQuoteError(f"the certification is not by the trusted AK: {exc.detail}") from None
    if report_data is None:
        raise TpmQuoteError("no expected report data to check the certification's extraData against")
    try:
        check_nonce(attest, report_data, size=NONCE_SIZE)
    except TpmQuoteError as exc:
        raise TpmQuoteError(f"the certification is not for this request: {exc.detail}") from None
    public = parse_tpmt_public_rsa(cert.public)
    name = object_name(public)
    if not hmac.compare_digest(name, attest.name):
        raise TpmQuoteError(f"the certified Name {attest.name.hex()} is not the Name of the given TPMT_PUBLIC ({name.hex()})")
    check_attributes(public)
    check_same_key(public, tee_pubkey)
    claims = {"tee_pubkey_certified": True, "tee_pubkey_name": name.hex()}
    return f"tee-pubkey (RSA-{public.key_bits}, Name {name.hex()[:16]}...) is TPM-resident, certified by the AK", claims
