"""Azure CVM HCL report and vTPM evidence parsing (evidence.md 4.4, guest-components.md 3.6). Pure.

HCL report: a 32-byte header ("HCLA", version, report size, request type,
status, reserved), at 0x20 the 1184-byte hardware report area (an SNP
report, or a 1024-byte TDREPORT whose report_data is at +128), at 0x4C0 the
runtime header (u32 data_size, version, report_type 2 = SNP / 4 = TDX,
hash_type 1 = SHA-256, var_size), at 0x4D4 `var_size` bytes of runtime
data: JSON with `keys` holding the `HCLAkPub` RSA JWK.

Wire evidence, in the three versions upstream accepts (trustee
`deps/verifier/src/az_{snp,tdx}_vtpm/compat.rs`; the same data in each):
* version 0, no `version` field (older guest-components): az-snp-vtpm
  `{"quote": {"signature": [bytes], "message": [bytes], "pcrs": [[32
  bytes] x 24]}, "report": [HCL report bytes], "vcek": "<PEM>"}`;
  az-tdx-vtpm `{"tpm_quote": {same byte arrays}, "hcl_report": [bytes],
  "td_quote": [bytes]}`.
* version 1 and 2: `{"version": 1|2, "tpm_quote": {"signature": hex raw RSA
  signature, "message": hex TPMS_ATTEST, "pcrs": [24 hex]}, "hcl_report":
  b64url, "vcek": b64url DER (az-snp-vtpm) | "td_quote": b64url
  (az-tdx-vtpm)}`. The guest sends `version` as a number; upstream's own
  samples carry the string "1", so both are accepted. Either base64
  alphabet, padding optional. Version 2 is laid out as version 1; the
  difference is a check: its HCL runtime data `user-data` (hex) must begin
  with the expected report data.
A `version` other than 1 or 2 is refused (upstream would read an unknown
version with the v0 fields as v0; here the version says which layout).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from attestation_service.core.verifiers.tpm.quote import TpmQuoteError, parse_pcrs
from trustee_common.b64 import std_decode
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

    def user_data(self) -> bytes:
        """The runtime data's `user-data` (hex): where a version 2 guest puts the report data."""
        value = self.runtime.get("user-data")
        try:
            if isinstance(value, str):
                return bytes.fromhex(value)
        except ValueError:
            pass
        raise HclReportError("HCL runtime data has no hex 'user-data'")

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
    #: 0 (no `version` field), 1 or 2.
    version: int
    message: bytes
    signature: bytes
    pcrs: list[bytes]
    hcl_report: bytes
    #: `vcek` (az-snp-vtpm, DER) or `td_quote` (az-tdx-vtpm).
    platform: bytes


def _hex(value: object, field: str) -> bytes:
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
    except ValueError:
        pass
    raise MalformedRequestError(f"{field}: missing or not hex")


def _byte_array(value: object, field: str) -> bytes:
    """A JSON array of byte values (serde's `Vec<u8>`), at most `MAX_FIELD_SIZE` long."""
    if not isinstance(value, list) or len(value) > MAX_FIELD_SIZE:
        raise MalformedRequestError(f"{field}: missing or not an array of at most {MAX_FIELD_SIZE} bytes")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in value):
        raise MalformedRequestError(f"{field}: must hold byte values 0..255")
    return bytes(value)


def _version(evidence: dict[str, Any], tee: str) -> int:
    if "version" not in evidence:
        return 0
    version = evidence["version"]
    if isinstance(version, bool) or str(version) not in ("1", "2"):
        raise MalformedRequestError(f"evidence ({tee}): version {clip_repr(version)} is not 1 or 2 (or absent: version 0)")
    return int(str(version))


def _pcrs(values: object, where: str) -> list[bytes]:
    try:
        return parse_pcrs(values, where)
    except TpmQuoteError as exc:
        raise MalformedRequestError(exc.detail) from None


def _vcek_pem(value: object, tee: str) -> bytes:
    """The DER inside the v0 `vcek` field (one PEM certificate); parsed as X.509 at the VCEK chain step."""
    if not isinstance(value, str) or len(value) > MAX_FIELD_SIZE:
        raise MalformedRequestError(f"evidence ({tee}): field 'vcek' is missing or not a PEM string")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    text = value.strip()
    if not text.startswith(begin) or not text.endswith(end) or text.count(begin) != 1:
        raise MalformedRequestError(f"evidence ({tee}): field 'vcek' is not one PEM certificate")
    return std_decode("".join(text[len(begin) : -len(end)].split()), f"evidence ({tee}) vcek")


def _parse_v0(evidence: dict[str, Any], tee: str) -> AzureEvidence:
    snp = tee == "az-snp-vtpm"
    quote_field, report_field = ("quote", "report") if snp else ("tpm_quote", "hcl_report")
    quote = evidence.get(quote_field)
    if not isinstance(quote, dict):
        raise MalformedRequestError(f"evidence ({tee}, version 0): field '{quote_field}' is missing or not an object")
    where = f"evidence ({tee}, version 0) {quote_field}"
    raw_pcrs = quote.get("pcrs")
    if not isinstance(raw_pcrs, list):
        raise MalformedRequestError(f"{where}.pcrs: missing or not an array")
    pcrs = _pcrs([_byte_array(p, f"{where}.pcrs[{i}]").hex() for i, p in enumerate(raw_pcrs)], where)
    message = _byte_array(quote.get("message"), f"{where}.message")
    signature = _byte_array(quote.get("signature"), f"{where}.signature")
    hcl_report = _byte_array(evidence.get(report_field), f"evidence ({tee}, version 0) {report_field}")
    platform = (_vcek_pem(evidence.get("vcek"), tee) if snp
                else _byte_array(evidence.get("td_quote"), f"evidence ({tee}, version 0) td_quote"))
    return AzureEvidence(0, message, signature, pcrs, hcl_report, platform)


def parse_azure_evidence(evidence: object, tee: str) -> AzureEvidence:
    """The wire JSON of any version (0, 1, 2) as one `AzureEvidence`; `MalformedRequestError` naming the field."""
    platform_field = "vcek" if tee == "az-snp-vtpm" else "td_quote"
    if not isinstance(evidence, dict):
        raise MalformedRequestError(f"evidence ({tee}): must be a JSON object")
    version = _version(evidence, tee)
    if version == 0:
        return _parse_v0(evidence, tee)
    quote = evidence.get("tpm_quote")
    if not isinstance(quote, dict):
        raise MalformedRequestError(f"evidence ({tee}): field 'tpm_quote' is missing or not an object")
    pcrs = _pcrs(quote.get("pcrs"), f"evidence ({tee}) tpm_quote")
    fields: dict[str, bytes] = {}
    for name in ("hcl_report", platform_field):
        value = evidence.get(name)
        if not isinstance(value, str):
            raise MalformedRequestError(f"evidence ({tee}): field '{name}' is missing or not a string")
        fields[name] = b64_any(value, f"evidence ({tee}) {name}")
    return AzureEvidence(
        version, _hex(quote.get("message"), f"evidence ({tee}) tpm_quote.message"),
        _hex(quote.get("signature"), f"evidence ({tee}) tpm_quote.signature"), pcrs, fields["hcl_report"], fields[platform_field],
    )
