"""TDX DCAP quote v4/v5 parsing: bytes in, frozen dataclasses out (evidence.md 1.1-1.3).

Pure and total: any input either parses or raises `QuoteParseError` naming
the field and its offset; no `IndexError`/`struct.error` escapes. Values are
not judged here (vendor id, tee type, key type are checked by the verifier,
step 1); only what the layout itself needs is enforced. Trailing bytes after
the signature data are ignored (real quotes are zero-padded).
"""

from __future__ import annotations

from dataclasses import dataclass

from trustee_common.errors import EvidenceError

HEADER_SIZE = 48
V5_DESCRIPTOR_SIZE = 6
TD10_BODY_SIZE = 584
TD15_BODY_SIZE = 648
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
QE_REPORT_SIZE = 384
SIGNATURE_SIZE = 64
ATTESTATION_KEY_SIZE = 64
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
#: Largest quote accepted (real quotes are 5-8 KiB; the PEM chain is about 4 KiB).
MAX_QUOTE_SIZE = 64 * 1024

_BODY_SIZES = {BODY_TYPE_TD10: TD10_BODY_SIZE, BODY_TYPE_TD15: TD15_BODY_SIZE}


class QuoteParseError(EvidenceError):
    """The quote bytes are not a well-formed TDX quote v4/v5."""


class _Reader:
    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.offset = offset
        self.end = len(data) if end is None else end

    def take(self, size: int, field: str) -> bytes:
        if size < 0 or self.offset + size > self.end:
            raise QuoteParseError(
                f"{field}: needs {size} bytes at offset {self.offset}, only {max(self.end - self.offset, 0)} available"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    reserved: bytes
    qe_vendor_id: bytes
    user_data: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class TdReport10:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr_0: bytes
    rtmr_1: bytes
    rtmr_2: bytes
    rtmr_3: bytes
    report_data: bytes

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr_0, self.rtmr_1, self.rtmr_2, self.rtmr_3)


@dataclass(frozen=True, slots=True)
class TdReport15(TdReport10):
    tee_tcb_svn2: bytes
    mr_servicetd: bytes


@dataclass(frozen=True, slots=True)
class QeReport:
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class QeCertificationData:
    """Certification data type 6: the QE report, its PCK signature, the QE auth data and the PCK chain (type 5)."""

    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


@dataclass(frozen=True, slots=True)
class TdxQuote:
    header: QuoteHeader
    body_type: int
    body_size: int
    body: TdReport10
    signed_region: bytes
    signature: bytes
    attestation_key: bytes
    certification: QeCertificationData
    #: Bytes up to the end of the signature data (trailing padding excluded).
    used_size: int


def _parse_header(reader: _Reader) -> QuoteHeader:
    raw = reader.data[: HEADER_SIZE]
    version = reader.u16("header.version (offset 0)")
    if version not in (4, 5):
        raise QuoteParseError(f"header.version (offset 0): {version} is not a TDX quote version (4 or 5)")
    return QuoteHeader(
        version=version,
        att_key_type=reader.u16("header.att_key_type"),
        tee_type=reader.u32("header.tee_type"),
        reserved=reader.take(4, "header.reserved"),
        qe_vendor_id=reader.take(16, "header.qe_vendor_id"),
        user_data=reader.take(20, "header.user_data"),
        raw=raw,
    )


def _parse_body(reader: _Reader, body_type: int) -> TdReport10:
    start = reader.offset
    sizes = (16, 48, 48, 8, 8, 8, 48, 48, 48, 48, 48, 48, 48, 48, 64)
    names = (
        "tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam", "mr_td",
        "mr_config_id", "mr_owner", "mr_owner_config", "rtmr_0", "rtmr_1", "rtmr_2", "rtmr_3", "report_data",
    )
    values = {name: reader.take(size, f"body.{name} (body offset {start})") for name, size in zip(names, sizes, strict=True)}
    if body_type == BODY_TYPE_TD15:
        svn2 = reader.take(16, "body.tee_tcb_svn2")
        servicetd = reader.take(48, "body.mr_servicetd")
        return TdReport15(**values, tee_tcb_svn2=svn2, mr_servicetd=servicetd)
    return TdReport10(**values)


def parse_qe_report(raw: bytes) -> QeReport:
    if len(raw) != QE_REPORT_SIZE:
        raise QuoteParseError(f"qe_report: must be {QE_REPORT_SIZE} bytes, got {len(raw)}")
    return QeReport(
        cpu_svn=raw[0:16],
        misc_select=int.from_bytes(raw[16:20], "little"),
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        isv_prod_id=int.from_bytes(raw[256:258], "little"),
        isv_svn=int.from_bytes(raw[258:260], "little"),
        report_data=raw[320:384],
        raw=raw,
    )


def _parse_certification(reader: _Reader) -> QeCertificationData:
    at = reader.offset
    cert_type = reader.u16("certification_data.type")
    if cert_type != CERT_TYPE_QE_REPORT:
        raise QuoteParseError(f"certification_data.type (offset {at}): {cert_type}, expected {CERT_TYPE_QE_REPORT} (QE report)")
    size_at = reader.offset
    size = reader.u32("certification_data.size")
    if size > reader.end - reader.offset:
        raise QuoteParseError(
            f"certification_data.size (offset {size_at}): {size} exceeds the {reader.end - reader.offset} bytes left in the auth data"
        )
    inner = _Reader(reader.data, reader.offset, reader.offset + size)
    qe_report = parse_qe_report(inner.take(QE_REPORT_SIZE, "qe_report"))
    qe_signature = inner.take(SIGNATURE_SIZE, "qe_report_signature")
    auth_size = inner.u16("qe_auth_data.size")
    auth = inner.take(auth_size, "qe_auth_data")
    inner_at = inner.offset
    inner_type = inner.u16("pck_certification_data.type")
    if inner_type != CERT_TYPE_PCK_CHAIN:
        raise QuoteParseError(
            f"pck_certification_data.type (offset {inner_at}): {inner_type}, expected {CERT_TYPE_PCK_CHAIN} (PCK certificate chain)"
        )
    chain_size = inner.u32("pck_certification_data.size")
    chain = inner.take(chain_size, "pck_certification_data.chain")
    if inner.offset != inner.end:
        raise QuoteParseError(
            f"certification_data.size (offset {size_at}): declares {size} bytes but its content ends after {inner.offset - size_at - 4}"
        )
    reader.offset = inner.end
    return QeCertificationData(qe_report, qe_signature, auth, chain.rstrip(b"\0"))


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5 (body type 2 or 3)."""
    if len(data) > MAX_QUOTE_SIZE:
        raise QuoteParseError(f"quote: {len(data)} bytes exceeds the limit of {MAX_QUOTE_SIZE}")
    reader = _Reader(bytes(data))
    header = _parse_header(reader)
    body_type, body_size = BODY_TYPE_TD10, TD10_BODY_SIZE
    if header.version == 5:
        body_type = reader.u16("body_descriptor.type (offset 48)")
        body_size = reader.u32("body_descriptor.size (offset 50)")
        if body_type not in _BODY_SIZES:
            raise QuoteParseError(f"body_descriptor.type (offset 48): {body_type} is not a TD report (2 or 3)")
        if body_size != _BODY_SIZES[body_type]:
            expected = _BODY_SIZES[body_type]
            raise QuoteParseError(f"body_descriptor.size (offset 50): {body_size}, expected {expected} for body type {body_type}")
    body = _parse_body(reader, body_type)
    signed_end = reader.offset
    length_at = reader.offset
    auth_length = reader.u32(f"signature_data.length (offset {length_at})")
    if auth_length > reader.end - reader.offset:
        raise QuoteParseError(
            f"signature_data.length (offset {length_at}): {auth_length} exceeds the {reader.end - reader.offset} bytes that follow"
        )
    auth = _Reader(reader.data, reader.offset, reader.offset + auth_length)
    signature = auth.take(SIGNATURE_SIZE, f"signature_data.signature (offset {auth.offset})")
    key = auth.take(ATTESTATION_KEY_SIZE, f"signature_data.attestation_key (offset {auth.offset})")
    certification = _parse_certification(auth)
    return TdxQuote(
        header=header,
        body_type=body_type,
        body_size=body_size,
        body=body,
        signed_region=reader.data[:signed_end],
        signature=signature,
        attestation_key=key,
        certification=certification,
        used_size=auth.end,
    )
