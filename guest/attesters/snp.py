"""The `snp` attester: an AMD SEV-SNP attestation report through configfs-tsm or /dev/sev-guest.

Report (guest-components.md 3.3): the report data is at most 64 bytes,
zero-padded to 64, and the report is requested at VMPL 0 together with
the host's certificate table (the "extended" report).

* configfs-tsm (preferred when the report root exists): make an entry
  under `/sys/kernel/config/tsm/report`, require provider `sev_guest`,
  write `privlevel` 0 when that file exists, write `inblob`, read
  `outblob` (the raw 1184-byte report) and `auxblob` when present (the
  certificate table), then require `generation` 1 (no other writer). The
  entry is removed in every case.
* /dev/sev-guest: the SNP_GET_EXT_REPORT ioctl (Linux uapi sev-guest.h),
  retried once with the size the host asks for, or SNP_GET_REPORT when the
  extended request is not supported. The request and response layouts are
  pure functions below (`pack_*` / `unpack_*`), tested without a device.

Evidence is upstream's `{"attestation_report": <virtee/sev serde object>,
"cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|"ARK"|"CRL"|{"OTHER": uuid}, "data": [bytes]}] | null}`
with byte fields as arrays of integers (`report_to_wire` / `parse_cert_table`).

Paths move by constructor argument or environment variable (`SnpPaths.from_env`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import secrets
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.attesters.tdx import ENV_TSM_REPORT, tsm_provider_is
from trustee_common.errors import AttestationError, MalformedRequestError

logger = logging.getLogger(__name__)

SNP_PROVIDER = "sev_guest"
REPORT_DATA_SIZE = 64
REPORT_SIZE = 0x4A0
#: VMPL the report is requested at (upstream: 0).
REPORT_VMPL = 0
ENV_SEV_GUEST_DEVICE = "SEV_GUEST_DEVICE"
ENV_SEV_GUEST_PLATFORM = "SEV_GUEST_PLATFORM"

# --- Linux uapi sev-guest.h (facts: sizes, offsets, ioctl numbers) ---------------------

#: struct snp_report_req { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; }
REPORT_REQ_SIZE = 96
#: struct snp_ext_report_req { struct snp_report_req data; u64 certs_address; u32 certs_len; } (8-aligned)
EXT_REPORT_REQ_SIZE = 112
#: struct snp_report_resp { u8 data[4000]; }
REPORT_RESP_SIZE = 4000
#: struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2; }
GUEST_REQUEST_SIZE = 32
MSG_VERSION = 1
_IOC_READ_WRITE = 3


def _iowr(kind: str, number: int, size: int) -> int:
    return (_IOC_READ_WRITE << 30) | (size << 16) | (ord(kind) << 8) | number


SNP_GET_REPORT = _iowr("S", 0x0, GUEST_REQUEST_SIZE)
SNP_GET_EXT_REPORT = _iowr("S", 0x2, GUEST_REQUEST_SIZE)
#: exitinfo2 upper half: the host needs a larger certificate buffer (its size is written back to certs_len).
VMM_ERR_INVALID_LEN = 1
VMM_ERR_BUSY = 2
PAGE_SIZE = 4096
CERTS_BUFFER_SIZE = 4 * PAGE_SIZE
#: MSG_REPORT_RSP: u32 status; u32 report_size; u8 reserved[24]; report.
_RESPONSE_REPORT_OFFSET = 0x20

# --- certificate table (GHCB spec; evidence.md 3.3) -------------------------------------

CERT_TABLE_ENTRY_SIZE = 24
CERT_GUIDS = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}


@dataclass(frozen=True)
class SnpPaths:
    tsm_report: Path = Path("/sys/kernel/config/tsm/report")
    device: Path = Path("/dev/sev-guest")
    platform: Path = Path("/sys/devices/platform/sev-guest")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SnpPaths:
        default = cls()
        return cls(
            Path(environ.get(ENV_TSM_REPORT) or default.tsm_report),
            Path(environ.get(ENV_SEV_GUEST_DEVICE) or default.device),
            Path(environ.get(ENV_SEV_GUEST_PLATFORM) or default.platform),
        )


# --- raw report -> upstream's serde object ------------------------------------------------

_BYTE_FIELDS = {
    "family_id": (0x10, 16), "image_id": (0x20, 16), "report_data": (0x50, 64), "measurement": (0x90, 48),
    "host_data": (0xC0, 32), "id_key_digest": (0xE0, 48), "author_key_digest": (0x110, 48), "report_id": (0x140, 32),
    "report_id_ma": (0x160, 32), "chip_id": (0x1A0, 64),
}
_INT_FIELDS = {"version": (0x00, 4), "guest_svn": (0x04, 4), "policy": (0x08, 8), "vmpl": (0x30, 4), "sig_algo": (0x34, 4),
               "plat_info": (0x40, 8), "key_info": (0x48, 4)}
_TCB_FIELDS = {"current_tcb": 0x38, "reported_tcb": 0x180, "committed_tcb": 0x1E0, "launch_tcb": 0x1F0}
#: virtee/sev 6.x `AttestationReport` field order (serde serialises in declaration order).
WIRE_KEYS = (
    "version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "sig_algo", "current_tcb", "plat_info", "key_info",
    "report_data", "measurement", "host_data", "id_key_digest", "author_key_digest", "report_id", "report_id_ma",
    "reported_tcb", "cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "chip_id", "committed_tcb", "current", "committed",
    "launch_tcb", "launch_mit_vector", "current_mit_vector", "signature",
)


def _is_turin(cpuid: tuple[int, int, int] | None) -> bool:
    return cpuid is not None and cpuid[0] == 0x1A and cpuid[1] <= 0x11


def _tcb(raw: bytes, turin: bool) -> dict[str, int | None]:
    if turin:
        return {"fmc": raw[0], "bootloader": raw[1], "tee": raw[2], "snp": raw[3], "microcode": raw[7]}
    return {"fmc": None, "bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


def report_to_wire(raw: bytes) -> dict[str, Any]:
    """Upstream's `attestation_report` object (virtee/sev serde form) of a raw 1184-byte report."""
    if len(raw) != REPORT_SIZE:
        raise AttestationError(f"SNP report: {len(raw)} bytes, an SNP report is exactly {REPORT_SIZE}")
    version = int.from_bytes(raw[0:4], "little")
    if version < 2:
        raise AttestationError(f"SNP report: version {version} is older than 2")
    cpuid = (raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None
    turin = _is_turin(cpuid)
    obj: dict[str, Any] = {}
    for name in WIRE_KEYS:
        if name in _INT_FIELDS:
            at, size = _INT_FIELDS[name]
            obj[name] = int.from_bytes(raw[at : at + size], "little")
        elif name in _BYTE_FIELDS:
            at, size = _BYTE_FIELDS[name]
            obj[name] = list(raw[at : at + size])
        elif name in _TCB_FIELDS:
            at = _TCB_FIELDS[name]
            obj[name] = _tcb(raw[at : at + 8], turin)
        elif name.startswith("cpuid_"):
            obj[name] = None if cpuid is None else cpuid[("cpuid_fam_id", "cpuid_mod_id", "cpuid_step").index(name)]
        elif name in ("current", "committed"):
            at = 0x1E8 if name == "current" else 0x1EC
            obj[name] = {"major": raw[at + 2], "minor": raw[at + 1], "build": raw[at]}
        elif name.endswith("_mit_vector"):
            at = 0x1F8 if name == "launch_mit_vector" else 0x200
            obj[name] = int.from_bytes(raw[at : at + 8], "little") if version >= 5 else None
        else:  # signature
            obj[name] = {"r": list(raw[0x2A0:0x2E8]), "s": list(raw[0x2E8:0x330])}
    return obj


def _cert_type(guid: bytes) -> str | dict[str, str]:
    for candidate in (uuid.UUID(bytes=guid), uuid.UUID(bytes_le=guid)):
        if candidate in CERT_GUIDS:
            return CERT_GUIDS[candidate]
    return {"OTHER": str(uuid.UUID(bytes=guid))}


def parse_cert_table(blob: bytes) -> list[dict[str, Any]] | None:
    """`cert_chain` entries of an extended-report certificate table; None when the table is empty."""
    chain: list[dict[str, Any]] = []
    at = 0
    while True:
        if at + CERT_TABLE_ENTRY_SIZE > len(blob):
            if not blob or not any(blob):
                return None
            raise AttestationError(f"SNP certificate table: entry at offset {at} is truncated (no all-zero terminator)")
        guid = blob[at : at + 16]
        offset, length = struct.unpack_from("<II", blob, at + 16)
        if guid == bytes(16):
            return chain or None
        if offset + length > len(blob) or offset < at + CERT_TABLE_ENTRY_SIZE:
            raise AttestationError(
                f"SNP certificate table: entry {uuid.UUID(bytes=guid)} points at bytes {offset}..{offset + length}, "
                f"outside the {len(blob)}-byte table data"
            )
        chain.append({"cert_type": _cert_type(guid), "data": list(blob[offset : offset + length])})
        at += CERT_TABLE_ENTRY_SIZE


def build_evidence(report: bytes, cert_table: bytes | None) -> dict[str, Any]:
    return {"attestation_report": report_to_wire(report), "cert_chain": parse_cert_table(cert_table) if cert_table else None}


# --- configfs-tsm -------------------------------------------------------------------------


def _tsm_error(step: str, entry: Path, exc: OSError | None = None) -> AttestationError:
    cause = f": {exc.strerror or exc}" if exc is not None else ""
    return AttestationError(f"SNP report via configfs-tsm: {step} ({entry}){cause}")


def tsm_report(root: Path, report_data: bytes, privlevel: int = REPORT_VMPL) -> tuple[bytes, bytes | None]:
    """The raw report over `report_data` (64 bytes) and the certificate table (`auxblob`) when present."""
    entry = root / f"trustee-{secrets.token_hex(8)}"
    try:
        os.mkdir(entry)
    except OSError as exc:
        raise _tsm_error("cannot create a report entry", entry, exc) from None
    try:
        try:
            found = (entry / "provider").read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise _tsm_error("cannot read provider", entry, exc) from None
        if found != SNP_PROVIDER:
            raise _tsm_error(f"provider is {found!r}, not {SNP_PROVIDER!r}", entry)
        try:
            if (entry / "privlevel").exists():
                (entry / "privlevel").write_text(f"{privlevel}\n", encoding="ascii")
            (entry / "inblob").write_bytes(report_data)
            report = (entry / "outblob").read_bytes()
            auxblob = (entry / "auxblob").read_bytes() if (entry / "auxblob").exists() else None
            generation_text = (entry / "generation").read_text(encoding="ascii").strip()
        except OSError as exc:
            raise _tsm_error("report generation failed", entry, exc) from None
        if generation_text != "1":
            raise _tsm_error(f"generation is {generation_text!r}, not 1: another writer used the entry", entry)
        if len(report) != REPORT_SIZE:
            raise _tsm_error(f"outblob is {len(report)} bytes, not an SNP report ({REPORT_SIZE})", entry)
        return report, auxblob
    finally:
        try:
            os.rmdir(entry)
        except OSError as exc:
            logger.warning("could not remove configfs-tsm entry %s: %s", entry, exc.strerror or exc)


# --- /dev/sev-guest -----------------------------------------------------------------------


def pack_report_req(report_data: bytes, vmpl: int = REPORT_VMPL) -> bytes:
    """struct snp_report_req."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")
    return report_data + struct.pack("<I", vmpl) + bytes(28)


def pack_ext_report_req(report_data: bytes, certs_address: int, certs_len: int, vmpl: int = REPORT_VMPL) -> bytes:
    """struct snp_ext_report_req (with its trailing alignment padding)."""
    return pack_report_req(report_data, vmpl) + struct.pack("<QI4x", certs_address, certs_len)


def unpack_ext_report_certs_len(request: bytes) -> int:
    """certs_len of an snp_ext_report_req, as the kernel writes it back when the buffer was too small."""
    (certs_len,) = struct.unpack_from("<I", request, REPORT_REQ_SIZE + 8)
    return int(certs_len)


def pack_guest_request(req_address: int, resp_address: int, msg_version: int = MSG_VERSION) -> bytearray:
    """struct snp_guest_request_ioctl (exitinfo2 zero), mutable for the ioctl to fill in."""
    return bytearray(struct.pack("<B7xQQQ", msg_version, req_address, resp_address, 0))


def unpack_guest_request_errors(request: bytes | bytearray) -> tuple[int, int]:
    """(fw_error, vmm_error) from the exitinfo2 of an snp_guest_request_ioctl."""
    fw_error, vmm_error = struct.unpack_from("<II", request, 24)
    return int(fw_error), int(vmm_error)


def unpack_report_resp(response: bytes) -> bytes:
    """The raw report in an snp_report_resp (MSG_REPORT_RSP: status, report_size, reserved, report)."""
    status, size = struct.unpack_from("<II", response, 0)
    if status != 0:
        raise AttestationError(f"SNP report via /dev/sev-guest: firmware status {status:#x}")
    if size != REPORT_SIZE or _RESPONSE_REPORT_OFFSET + size > len(response):
        raise AttestationError(f"SNP report via /dev/sev-guest: report_size {size}, expected {REPORT_SIZE}")
    return bytes(response[_RESPONSE_REPORT_OFFSET : _RESPONSE_REPORT_OFFSET + size])


def _device_error(what: str, exc: OSError, request: bytes | bytearray) -> AttestationError:
    fw_error, vmm_error = unpack_guest_request_errors(request)
    return AttestationError(
        f"SNP report via /dev/sev-guest: {what} failed: {exc.strerror or exc} (fw_error {fw_error:#x}, vmm_error {vmm_error:#x})"
    )


def device_report(device: Path, report_data: bytes, extended: bool = True) -> tuple[bytes, bytes | None]:
    """The raw report (and certificate table when `extended`) through the sev-guest ioctls."""
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as exc:
        raise AttestationError(f"SNP report via /dev/sev-guest: cannot open {device}: {exc.strerror or exc}") from None
    try:
        response = ctypes.create_string_buffer(REPORT_RESP_SIZE)
        if extended:
            certs_len = CERTS_BUFFER_SIZE
            for _attempt in range(2):
                certs = ctypes.create_string_buffer(certs_len)
                request = ctypes.create_string_buffer(pack_ext_report_req(report_data, ctypes.addressof(certs), certs_len))
                guest = pack_guest_request(ctypes.addressof(request), ctypes.addressof(response))
                try:
                    fcntl.ioctl(fd, SNP_GET_EXT_REPORT, guest)
                except OSError as exc:
                    if exc.errno == errno.ENOTTY:
                        logger.info("SNP_GET_EXT_REPORT not supported by %s: falling back to SNP_GET_REPORT", device)
                        return device_report(device, report_data, extended=False)
                    needed = unpack_ext_report_certs_len(request.raw)
                    if unpack_guest_request_errors(guest)[1] == VMM_ERR_INVALID_LEN and needed > certs_len:
                        certs_len = -(-needed // PAGE_SIZE) * PAGE_SIZE
                        continue
                    raise _device_error("SNP_GET_EXT_REPORT", exc, guest) from None
                return unpack_report_resp(response.raw), certs.raw
            raise AttestationError("SNP report via /dev/sev-guest: the host asked for a larger certificate buffer twice")
        request = ctypes.create_string_buffer(pack_report_req(report_data))
        guest = pack_guest_request(ctypes.addressof(request), ctypes.addressof(response))
        try:
            fcntl.ioctl(fd, SNP_GET_REPORT, guest)
        except OSError as exc:
            raise _device_error("SNP_GET_REPORT", exc, guest) from None
        return unpack_report_resp(response.raw), None
    finally:
        os.close(fd)


# --- the attester ---------------------------------------------------------------------------


class SnpAttester:
    tee = "snp"

    def __init__(self, paths: SnpPaths | None = None) -> None:
        self.paths = paths or SnpPaths()

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        if len(report_data) > REPORT_DATA_SIZE:
            raise MalformedRequestError(f"SNP report data is {len(report_data)} bytes, at most {REPORT_DATA_SIZE} are allowed")
        padded = report_data.ljust(REPORT_DATA_SIZE, b"\x00")
        if self.paths.tsm_report.is_dir():
            report, table = tsm_report(self.paths.tsm_report, padded)
        else:
            report, table = device_report(self.paths.device, padded)
        return build_evidence(report, table)


def detect_snp(paths: SnpPaths) -> str | None:
    """Why this machine is an SEV-SNP guest (for the log line), or None."""
    if paths.platform.exists():
        return f"{paths.platform} exists"
    if tsm_provider_is(paths.tsm_report, SNP_PROVIDER):
        return f"configfs-tsm provider {SNP_PROVIDER} under {paths.tsm_report}"
    return None
