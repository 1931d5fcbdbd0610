"""The `tdx` attester: a TD quote through configfs-tsm, plus the CCEL event log.

Quote (guest-components.md 3.2): make an entry under the configfs-tsm
report directory (default `/sys/kernel/config/tsm/report`), require its
`provider` to be `tdx_guest`, write the 64-byte report data (shorter data
is zero-padded, longer is an error) to `inblob`, read the quote from
`outblob`, then read `generation`: anything but 1 means another writer
used the entry meanwhile, and the quote is refused. The entry is removed
in every case.

Event log (guest-components.md 2.6): the ACPI CCEL data
(`/sys/firmware/acpi/tables/data/CCEL`) cut at its first 8-byte all-0xFF
or all-0x00 terminator, followed by the attestation agent's AAEL file
(`/run/attestation-agent/eventlog`) when it exists (with a fixed Spec ID
header first when there is no CCEL), then 8 bytes 0xFF. Evidence is
`{"cc_eventlog": <standard base64 or null>, "quote": <standard base64>}`.

Init-data (guest-components.md 3.9): at AA start-up `bind_init_data` takes a
quote (zero report data), reads MRCONFIGID from its TD report body and
refuses to go on unless it equals the init-data digest zero-padded or
truncated to 48 bytes, the rule the AS's TDX verifier applies.

Every path can be moved by a constructor argument or environment variable
(`TdxPaths.from_env`), which is how tests point it at a fake configfs.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_common.b64 import std_encode
from trustee_common.errors import AttestationError, MalformedRequestError

logger = logging.getLogger(__name__)

TDX_PROVIDER = "tdx_guest"
REPORT_DATA_SIZE = 64
#: MRCONFIGID in a quote: the TD report body follows the 48-byte header (v4) or the header plus the v5 body
#: descriptor (type u16, size u32); MRCONFIGID is 184 bytes into the body in TDX 1.0 and 1.5 bodies alike.
QUOTE_HEADER_SIZE = 48
V5_BODY_DESCRIPTOR_SIZE = 6
MR_CONFIG_ID_OFFSET = 184
MR_CONFIG_ID_SIZE = 48
#: Environment variables that move the attester's paths (tests, unusual guests).
ENV_TSM_REPORT = "TSM_REPORT_PATH"
ENV_CCEL = "CCEL_PATH"
ENV_AAEL = "AAEL_PATH"
ENV_TDX_DEVICE = "TDX_GUEST_DEVICE"

#: Spec ID header (all-zero signature; SHA-384 and SM3 declared) put before an AAEL without a CCEL.
AAEL_ONLY_HEADER = (
    struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", 37) + bytes(24) + struct.pack("<IHHHHB", 2, 0x000C, 48, 0x0012, 32, 0)
)
END_FLAG = b"\xff" * 8
_TERMINATORS = (END_FLAG, bytes(8))
_DIGEST_SIZES = {0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}


@dataclass(frozen=True)
class TdxPaths:
    tsm_report: Path = Path("/sys/kernel/config/tsm/report")
    ccel: Path = Path("/sys/firmware/acpi/tables/data/CCEL")
    aael: Path = Path("/run/attestation-agent/eventlog")
    device: Path = Path("/dev/tdx_guest")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TdxPaths:
        default = cls()
        return cls(
            Path(environ.get(ENV_TSM_REPORT) or default.tsm_report),
            Path(environ.get(ENV_CCEL) or default.ccel),
            Path(environ.get(ENV_AAEL) or default.aael),
            Path(environ.get(ENV_TDX_DEVICE) or default.device),
        )


def _quote_error(step: str, entry: Path, exc: OSError | None = None) -> AttestationError:
    cause = f": {exc.strerror or exc}" if exc is not None else ""
    return AttestationError(f"TDX quote via configfs-tsm: {step} ({entry}){cause}")


def _read_provider(entry: Path) -> str:
    try:
        return (entry / "provider").read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise _quote_error("cannot read provider", entry, exc) from None


def tsm_quote(root: Path, report_data: bytes, provider: str = TDX_PROVIDER) -> bytes:
    """One quote over exactly `report_data` (64 bytes) from configfs-tsm under `root`."""
    entry = root / f"trustee-{secrets.token_hex(8)}"
    try:
        os.mkdir(entry)
    except OSError as exc:
        raise _quote_error("cannot create a report entry", entry, exc) from None
    try:
        found = _read_provider(entry)
        if found != provider:
            raise _quote_error(f"provider is {found!r}, not {provider!r}", entry)
        try:
            (entry / "inblob").write_bytes(report_data)
            quote = (entry / "outblob").read_bytes()
            generation_text = (entry / "generation").read_text(encoding="ascii").strip()
        except OSError as exc:
            raise _quote_error("report generation failed", entry, exc) from None
        if generation_text != "1":
            raise _quote_error(f"generation is {generation_text!r}, not 1: another writer used the entry", entry)
        if not quote:
            raise _quote_error("outblob is empty", entry)
        return quote
    finally:
        _remove_entry(entry)


def _remove_entry(entry: Path) -> None:
    try:
        os.rmdir(entry)
    except OSError as exc:
        logger.warning("could not remove configfs-tsm entry %s: %s", entry, exc.strerror or exc)


def tsm_provider_is(root: Path, provider: str = TDX_PROVIDER) -> bool:
    """True when an entry can be made under `root` and its provider is `provider` (detection)."""
    entry = root / f"trustee-probe-{secrets.token_hex(8)}"
    try:
        os.mkdir(entry)
    except OSError:
        return False
    try:
        return _read_provider(entry) == provider
    except AttestationError:
        return False
    finally:
        _remove_entry(entry)


def quote_mr_config_id(quote: bytes) -> bytes:
    """MRCONFIGID of a TD quote v4 or v5."""
    if len(quote) < 2:
        raise AttestationError("TDX quote: shorter than its version field")
    (version,) = struct.unpack_from("<H", quote, 0)
    if version not in (4, 5):
        raise AttestationError(f"TDX quote version {version}: MRCONFIGID cannot be located (4 or 5 expected)")
    start = QUOTE_HEADER_SIZE + (V5_BODY_DESCRIPTOR_SIZE if version == 5 else 0) + MR_CONFIG_ID_OFFSET
    if len(quote) < start + MR_CONFIG_ID_SIZE:
        raise AttestationError(f"TDX quote: {len(quote)} bytes, too short to hold MRCONFIGID")
    return quote[start : start + MR_CONFIG_ID_SIZE]


def trim_event_log(data: bytes) -> bytes:
    """`data` up to its first terminator after whole events (upstream's CCEL trimming)."""
    if len(data) < 32:
        raise AttestationError("CCEL event log: shorter than its first event header")
    (event_type,) = struct.unpack_from("<I", data, 4)
    offset = 28
    if event_type == 0x3:
        offset = 32 + struct.unpack_from("<I", data, 28)[0]
    while True:
        if offset + 8 > len(data):
            raise AttestationError(f"CCEL event log: no terminator after the event ending at offset {offset}")
        if data[offset : offset + 8] in _TERMINATORS:
            return data[:offset]
        offset = _next_event(data, offset)


def _next_event(data: bytes, offset: int) -> int:
    """Offset just after the TCG_PCR_EVENT2 at `offset`."""
    if offset + 12 > len(data):
        raise AttestationError(f"CCEL event log: truncated event at offset {offset}")
    (count,) = struct.unpack_from("<I", data, offset + 8)
    offset += 12
    for _ in range(count):
        if offset + 2 > len(data):
            raise AttestationError(f"CCEL event log: truncated digest at offset {offset}")
        (alg_id,) = struct.unpack_from("<H", data, offset)
        size = _DIGEST_SIZES.get(alg_id)
        if size is None:
            raise AttestationError(f"CCEL event log: unsupported digest algorithm {alg_id:#06x} at offset {offset}")
        offset += 2 + size
    if offset + 4 > len(data):
        raise AttestationError(f"CCEL event log: truncated event size at offset {offset}")
    (size,) = struct.unpack_from("<I", data, offset)
    end: int = offset + 4 + size
    return end


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AttestationError(f"cannot read {path}: {exc.strerror or exc}") from None


def build_cc_eventlog(ccel: bytes | None, aael: bytes | None) -> bytes | None:
    """Trimmed CCEL + AAEL + end flag, or None when neither exists."""
    if ccel is None and aael is None:
        return None
    log = trim_event_log(ccel) if ccel is not None else AAEL_ONLY_HEADER
    return log + (aael or b"") + END_FLAG


class TdxAttester:
    tee = "tdx"

    def __init__(self, paths: TdxPaths | None = None) -> None:
        self.paths = paths or TdxPaths()

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        if len(report_data) > REPORT_DATA_SIZE:
            raise MalformedRequestError(f"TDX report data is {len(report_data)} bytes, at most {REPORT_DATA_SIZE} are allowed")
        quote = tsm_quote(self.paths.tsm_report, report_data.ljust(REPORT_DATA_SIZE, b"\x00"))
        eventlog = build_cc_eventlog(_read_optional(self.paths.ccel), _read_optional(self.paths.aael))
        return {"cc_eventlog": None if eventlog is None else std_encode(eventlog), "quote": std_encode(quote)}

    def bind_init_data(self, digest: bytes) -> None:
        """Refuse to run unless this TD was launched with the init-data: MRCONFIGID == digest padded/truncated to 48 bytes."""
        actual = quote_mr_config_id(tsm_quote(self.paths.tsm_report, bytes(REPORT_DATA_SIZE)))
        expected = digest[:MR_CONFIG_ID_SIZE].ljust(MR_CONFIG_ID_SIZE, b"\x00")
        if not hmac.compare_digest(actual, expected):
            raise AttestationError(f"init-data does not match this TD: MRCONFIGID is {actual.hex()}, the init-data digest "
                                   f"padded/truncated to 48 bytes is {expected.hex()} (the host launched it with other init-data)")


def detect_tdx(paths: TdxPaths) -> str | None:
    """Why this machine is a TDX guest (for the log line), or None."""
    if tsm_provider_is(paths.tsm_report):
        return f"configfs-tsm provider {TDX_PROVIDER} under {paths.tsm_report}"
    if paths.device.exists():
        return f"{paths.device} exists"
    return None
