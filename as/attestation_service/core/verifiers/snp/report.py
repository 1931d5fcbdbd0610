"""SEV-SNP ATTESTATION_REPORT parsing (evidence.md 3.1): 1184 bytes in, a frozen dataclass out.

Pure and total: any input either parses or raises `SnpReportParseError`
naming the field and its offset. Layout rules that every genuine report
satisfies are enforced here (size, version 2..5, signature algorithm 1,
policy bit 17, must-be-zero fields, signing key 0/1); values are judged by
the verifier. `report_from_json` rebuilds the raw bytes from upstream's
wire object (virtee/sev serde names, integer-array bytes) so that both
wire forms verify the same signed bytes; `report_to_json` is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustee_common.errors import EvidenceError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72
VERSIONS = (2, 3, 4, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1
POLICY_RESERVED_BIT = 17
#: Highest policy bit defined (PAGE_SWAP_DISABLE); bits above it must be zero.
POLICY_MAX_BIT = 25
SIGNING_KEY_VCEK, SIGNING_KEY_VLEK = 0, 1
SIGNING_KEYS = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK"}

#: Must-be-zero ranges `(name, start, end)` outside the signature components.
_MBZ = (
    ("reserved0", 0x04C, 0x050),
    ("reserved1", 0x18B, 0x1A0),
    ("reserved2", 0x208, 0x2A0),
    ("signature.r high bytes", 0x2A0 + 48, 0x2A0 + 72),
    ("signature.s high bytes", 0x2E8 + 48, 0x2E8 + 72),
    ("signature.reserved", 0x330, REPORT_SIZE),
)


class SnpReportParseError(EvidenceError):
    """The bytes (or wire JSON) are not a well-formed SEV-SNP attestation report."""


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A TCB_VERSION; `fmc` is set only in the Turin layout."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: bytes, turin: bool) -> TcbVersion:
        if turin:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def encode(self) -> bytes:
        out = bytearray(8)
        if self.fmc is not None:
            out[0], out[1], out[2], out[3] = self.fmc, self.bootloader, self.tee, self.snp
        else:
            out[0], out[1], out[6] = self.bootloader, self.tee, self.snp
        out[7] = self.microcode
        return bytes(out)

    def to_json(self) -> dict[str, int | None]:
        return {"fmc": self.fmc, "bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}


@dataclass(frozen=True, slots=True)
class SnpReport:
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    sig_algo: int
    current_tcb: TcbVersion
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes
    raw: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> int:
        return (self.signer_info >> 2) & 0x7

    @property
    def product(self) -> str | None:
        """The product from CPUID (v3+), as Trustee maps it; None when unknown or absent."""
        return product_from_cpuid(self.cpuid)


def product_from_cpuid(cpuid: tuple[int, int, int] | None) -> str | None:
    if cpuid is None:
        return None
    family, model, _ = cpuid
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


def _u32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 4], "little")


def _u64(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 8], "little")


def _check_layout(raw: bytes) -> None:
    version = _u32(raw, 0)
    if version not in VERSIONS:
        raise SnpReportParseError(f"version (offset 0x000): {version} is not an SNP report version (2..5)")
    sig_algo = _u32(raw, 0x34)
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise SnpReportParseError(f"signature_algo (offset 0x034): {sig_algo}, expected 1 (ECDSA P-384 with SHA-384)")
    policy = _u64(raw, 0x08)
    if not policy >> POLICY_RESERVED_BIT & 1:
        raise SnpReportParseError(f"policy (offset 0x008): {policy:#x} has reserved bit 17 clear (must be 1)")
    if policy >> (POLICY_MAX_BIT + 1):
        raise SnpReportParseError(f"policy (offset 0x008): {policy:#x} sets must-be-zero bits above {POLICY_MAX_BIT}")
    key = (_u32(raw, 0x48) >> 2) & 0x7
    if key not in SIGNING_KEYS:
        raise SnpReportParseError(f"signer_info.signing_key (offset 0x048): {key} is neither VCEK (0) nor VLEK (1)")
    mbz = _MBZ if version >= 5 else (*_MBZ, ("mit_vectors (v5 only)", 0x1F8, 0x208))
    if version == 2:
        mbz = (*mbz, ("cpuid (v3+ only)", 0x188, 0x18B))
    for name, start, end in mbz:
        if any(raw[start:end]):
            raise SnpReportParseError(f"{name} (offset {start:#05x}): must be zero")


def parse_report(data: bytes) -> SnpReport:
    """Parse a raw 1184-byte SNP attestation report (versions 2 to 5)."""
    raw = bytes(data)
    if len(raw) != REPORT_SIZE:
        raise SnpReportParseError(f"report: {len(raw)} bytes, an SNP report is exactly {REPORT_SIZE} (0x4A0)")
    _check_layout(raw)
    version = _u32(raw, 0)
    cpuid = (raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None
    turin = product_from_cpuid(cpuid) == "Turin"

    def tcb(at: int) -> TcbVersion:
        return TcbVersion.decode(raw[at : at + 8], turin)

    return SnpReport(
        version=version,
        guest_svn=_u32(raw, 0x04),
        policy=_u64(raw, 0x08),
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=_u32(raw, 0x30),
        sig_algo=_u32(raw, 0x34),
        current_tcb=tcb(0x38),
        platform_info=_u64(raw, 0x40),
        signer_info=_u32(raw, 0x48),
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=tcb(0x180),
        cpuid=cpuid,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=tcb(0x1E0),
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=tcb(0x1F0),
        launch_mit_vector=_u64(raw, 0x1F8) if version >= 5 else None,
        current_mit_vector=_u64(raw, 0x200) if version >= 5 else None,
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
        raw=raw,
    )


# --- upstream's wire object ------------------------------------------------------------

_BYTE_FIELDS = (
    ("family_id", 0x10, 16), ("image_id", 0x20, 16), ("report_data", 0x50, 64), ("measurement", 0x90, 48),
    ("host_data", 0xC0, 32), ("id_key_digest", 0xE0, 48), ("author_key_digest", 0x110, 48), ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32), ("chip_id", 0x1A0, 64),
)
_INT_FIELDS = (("version", 0x00, 4), ("guest_svn", 0x04, 4), ("policy", 0x08, 8), ("vmpl", 0x30, 4), ("sig_algo", 0x34, 4),
               ("plat_info", 0x40, 8), ("key_info", 0x48, 4))
_TCB_FIELDS = (("current_tcb", 0x38), ("reported_tcb", 0x180), ("committed_tcb", 0x1E0), ("launch_tcb", 0x1F0))
_VERSION_FIELDS = (("current", 0x1E8), ("committed", 0x1EC))


def _int(value: object, field: str, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << (8 * size):
        raise SnpReportParseError(f"attestation_report.{field}: must be an unsigned {8 * size}-bit integer")
    return value


def _bytes(value: object, field: str, size: int) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise SnpReportParseError(f"attestation_report.{field}: must be an array of {size} byte values")
    return bytes(_int(v, f"{field}[]", 1) for v in value)


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnpReportParseError(f"attestation_report.{field}: must be an object")
    return value


def _tcb(value: object, field: str) -> bytes:
    obj = _object(value, field)
    fmc = obj.get("fmc")
    bootloader, tee, snp, microcode = (_int(obj.get(name), f"{field}.{name}", 1) for name in ("bootloader", "tee", "snp", "microcode"))
    return TcbVersion(bootloader, tee, snp, microcode, fmc=None if fmc is None else _int(fmc, f"{field}.fmc", 1)).encode()


def report_from_json(obj: object) -> bytes:
    """The raw report bytes of upstream's `attestation_report` object (reserved bytes zero)."""
    report = _object(obj, "(root)")
    out = bytearray(REPORT_SIZE)
    for name, at, size in _INT_FIELDS:
        out[at : at + size] = _int(report.get(name), name, size).to_bytes(size, "little")
    for name, at, size in _BYTE_FIELDS:
        out[at : at + size] = _bytes(report.get(name), name, size)
    for name, at in _TCB_FIELDS:
        out[at : at + 8] = _tcb(report.get(name), name)
    for index, name in enumerate(("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")):
        if report.get(name) is not None:
            out[0x188 + index] = _int(report[name], name, 1)
    for name, at in _VERSION_FIELDS:
        version = _object(report.get(name), name)
        out[at : at + 3] = bytes(_int(version.get(k), f"{name}.{k}", 1) for k in ("build", "minor", "major"))
    for name, at in (("launch_mit_vector", 0x1F8), ("current_mit_vector", 0x200)):
        if report.get(name) is not None:
            out[at : at + 8] = _int(report[name], name, 8).to_bytes(8, "little")
    signature = _object(report.get("signature"), "signature")
    out[0x2A0:0x2E8] = _bytes(signature.get("r"), "signature.r", SIGNATURE_COMPONENT_SIZE)
    out[0x2E8:0x330] = _bytes(signature.get("s"), "signature.s", SIGNATURE_COMPONENT_SIZE)
    return bytes(out)


def report_to_json(report: SnpReport) -> dict[str, Any]:
    """Upstream's wire object for a parsed report (the inverse of `report_from_json`)."""
    raw = report.raw
    obj: dict[str, Any] = {}
    for name, at, size in _INT_FIELDS:
        obj[name] = int.from_bytes(raw[at : at + size], "little")
    for name, at, size in _BYTE_FIELDS:
        obj[name] = list(raw[at : at + size])
    tcbs = {"current_tcb": report.current_tcb, "reported_tcb": report.reported_tcb,
            "committed_tcb": report.committed_tcb, "launch_tcb": report.launch_tcb}
    obj.update({name: value.to_json() for name, value in tcbs.items()})
    cpuid = report.cpuid
    for index, name in enumerate(("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")):
        obj[name] = None if cpuid is None else cpuid[index]
    for name, (major, minor, build) in (("current", report.current_version), ("committed", report.committed_version)):
        obj[name] = {"major": major, "minor": minor, "build": build}
    obj["launch_mit_vector"] = report.launch_mit_vector
    obj["current_mit_vector"] = report.current_mit_vector
    obj["signature"] = {"r": list(report.signature_r), "s": list(report.signature_s)}
    return obj
