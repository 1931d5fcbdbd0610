"""Azure CVM HCL report and vTPM evidence parsing (evidence.md 4.4, guest-components.md 3.6). Pure.

HCL report: a 32-byte header ("HCLA", version, report size, request type,
status, reserved), at 0x20 the 1184-byte hardware report area (an SNP
report, or a 1024-byte TDREPORT whose report_data is at +128), at 0x4C0 the
runtime header (u32 data_size, version, report_type 2 = SNP / 4 = TDX,
hash_type 1 = SHA-256, var_size), at 0x4D4 `var_size` bytes of runtime
data: JSON with `keys` holding the `HCLAkPub` RSA JWK.

Wire evidence: `{"version": 1|2 (number or string), "tpm_quote": {"message":
hex TPMS_ATTEST, "signature": hex raw RSA signature, "pcrs": [24 hex]},
"hcl_report": b64url, "vcek": b64url DER (az-snp-vtpm) | "td_quote": b64url
(az-tdx-vtpm)}`; either base64 alphabet, padding optional.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from attestation_service.core.verifiers.tpm.quote import TpmQuoteError, parse_pcrs
from trustee_common.bounded import loads_json
from trustee_common.errors import EvidenceError, MalformedRequestError, clip_repr

HCL_MAGIC = b"HCLA"
HEADER_SIZE = 0x20
HW_REPORT_SIZE = 1184
RUNTIME_HEADER_OFFSET = 0x4C0
VAR_DATA_OFFSET = 0x4D4
REPORT_TYPE_SNP, REPORT_TYPE_TDX = 2, 4
HASH_TYPE_SHA256 = 1
TDREPORT_SIZE = 1024
TDREPORT_REPORT_DATA = 128
#: Largest HCL report / quote field accepted.
MAX_FIELD_SIZE = 64 * 1024
RSA_ALG_RSASSA_SHA256 = (0x0014, 0x000B)


class HclReportError(EvidenceError):
    """An HCL report that is malformed, or whose runtime data is not usable."""


@dataclass(frozen=True, slots=True)
class HclReport:
    report_type: int
    hash_type: int
    #: The hardware report area (1184 bytes; a TDREPORT uses the first 1024).
    hw_report: bytes
    #: The runtime (HCL variable) data, exactly `var_size` bytes.
    var_data: bytes
    runtime: dict[str, Any]

    @property
    def tdreport_report_data(self) -> bytes:
        return self.hw_report[TDREPORT_REPORT_DATA : TDREPORT_REPORT_DATA + 64]

    def ak_public(self) -> rsa.RSAPublicKey:
        """The `HCLAkPub` RSA JWK of the runtime data."""
        keys = self.runtime.get("keys")
        jwk = next((k for k in keys if isinstance(k, dict) and k.get("kid") == "HCLAkPub"), None) if isinstance(keys, list) else None
        if jwk is None or jwk.get("kty") != "RSA" or not isinstance(jwk.get("n"), str) or not isinstance(jwk.get("e"), str):
            raise HclReportError("HCL runtime data has no RSA JWK with kid HCLAkPub")
        try:
            n, e = (int.from_bytes(b64_any(jwk[k], f"HCLAkPub.{k}"), "big") for k in ("n", "e"))
            return rsa.RSAPublicNumbers(e, n).public_key()
        except (ValueError, MalformedRequestError):
            raise HclReportError("HCLAkPub is not a valid RSA public key") from None


def b64_any(text: str, field: str) -> bytes:
    """Standard or URL-safe base64, padding optional; `MalformedRequestError` otherwise."""
    cleaned = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequestError(f"{field}: not base64") from None


def parse_hcl_report(data: bytes) -> HclReport:
    if len(data) > MAX_FIELD_SIZE:
        raise HclReportError(f"HCL report: {len(data)} bytes is more than {MAX_FIELD_SIZE}")
    if len(data) < VAR_DATA_OFFSET:
        raise HclReportError(f"HCL report: {len(data)} bytes, shorter than its fixed part ({VAR_DATA_OFFSET})")
    if data[:4] != HCL_MAGIC:
        raise HclReportError(f"HCL report: signature {data[:4]!r} at offset 0 is not b'HCLA'")
    _size, _version, report_type, hash_type, var_size = struct.unpack_from("<5I", data, RUNTIME_HEADER_OFFSET)
    if VAR_DATA_OFFSET + var_size > len(data):
        raise HclReportError(f"HCL report: var_size {var_size} at offset {RUNTIME_HEADER_OFFSET + 16} exceeds the report")
    var_data = bytes(data[VAR_DATA_OFFSET : VAR_DATA_OFFSET + var_size])
    runtime = loads_json(var_data, "HCL report: the runtime data", error=HclReportError)
    if not isinstance(runtime, dict):
        raise HclReportError("HCL report: the runtime data is not a JSON object")
    return HclReport(report_type, hash_type, bytes(data[HEADER_SIZE : HEADER_SIZE + HW_REPORT_SIZE]), var_data, runtime)


@dataclass(frozen=True, slots=True)
class AzureEvidence:
    version: str
    message: bytes
    signature: bytes
    pcrs: list[bytes]
    hcl_report: bytes
    #: `vcek` (az-snp-vtpm) or `td_quote` (az-tdx-vtpm).
    platform: bytes


def _hex(value: object, field: str) -> bytes:
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
    except ValueError:
        pass
    raise MalformedRequestError(f"{field}: missing or not hex")


def parse_azure_evidence(evidence: object, tee: str) -> AzureEvidence:
    platform_field = "vcek" if tee == "az-snp-vtpm" else "td_quote"
    if not isinstance(evidence, dict):
        raise MalformedRequestError(f"evidence ({tee}): must be a JSON object")
    version = evidence.get("version")
    if str(version) not in ("1", "2"):
        raise MalformedRequestError(f"evidence ({tee}): version {clip_repr(version)} is not 1 or 2")
    quote = evidence.get("tpm_quote")
    if not isinstance(quote, dict):
        raise MalformedRequestError(f"evidence ({tee}): field 'tpm_quote' is missing or not an object")
    try:
        pcrs = parse_pcrs(quote.get("pcrs"), f"evidence ({tee}) tpm_quote")
    except TpmQuoteError as exc:
        raise MalformedRequestError(exc.detail) from None
    fields: dict[str, bytes] = {}
    for name in ("hcl_report", platform_field):
        value = evidence.get(name)
        if not isinstance(value, str):
            raise MalformedRequestError(f"evidence ({tee}): field '{name}' is missing or not a string")
        fields[name] = b64_any(value, f"evidence ({tee}) {name}")
    return AzureEvidence(
        str(version), _hex(quote.get("message"), f"evidence ({tee}) tpm_quote.message"),
        _hex(quote.get("signature"), f"evidence ({tee}) tpm_quote.signature"), pcrs, fields["hcl_report"], fields[platform_field],
    )
