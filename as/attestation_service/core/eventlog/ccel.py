"""The ACPI CCEL table, and AAEL entries as TCG events.

CCEL (evidence.md 4.5): a 56-byte ACPI table, signature "CCEL", with the
confidential-computing type at byte 36 (2 = TDX), the log area minimum
length (LAML, u64 at 40) and the log area start address (LASA, u64 at 48).

An AAEL entry (guest-components.md 2.6) is a `TCG_PCR_EVENT2` of type
`EV_EVENT_TAG` whose data is the tagged event `u32 0x4141454C, u32 size,
"<domain> <operation> <content>"`; its digest is the hash of that tagged
data. Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from attestation_service.core.eventlog.details import AAEL_TAG_ID
from attestation_service.core.eventlog.log import EventLogParseError
from attestation_service.core.eventlog.names import ALG_SHA384, EV_EVENT_TAG, hash_with

CCEL_TABLE_SIZE = 56
CC_TYPE_NAMES = {1: "SEV", 2: "TDX"}


@dataclass(frozen=True, slots=True)
class CcelTable:
    revision: int
    oem_id: str
    oem_table_id: str
    cc_type: int
    cc_subtype: int
    #: Log area minimum length.
    laml: int
    #: Log area start address.
    lasa: int

    @property
    def cc_type_name(self) -> str:
        return CC_TYPE_NAMES.get(self.cc_type, f"unknown ({self.cc_type})")


def _table_error(field_name: str, offset: int, problem: str) -> EventLogParseError:
    return EventLogParseError(f"CCEL table: {field_name} at offset {offset}: {problem}", field=field_name, offset=offset)


def parse_ccel_table(data: bytes) -> CcelTable:
    """Parse the ACPI CCEL table; raise `EventLogParseError` if it is not one."""
    if len(data) < CCEL_TABLE_SIZE:
        raise _table_error("table", 0, f"{len(data)} bytes, a CCEL table has {CCEL_TABLE_SIZE}")
    if data[:4] != b"CCEL":
        raise _table_error("signature", 0, f"{data[:4]!r} is not b'CCEL'")
    (length,) = struct.unpack_from("<I", data, 4)
    if length != CCEL_TABLE_SIZE or len(data) != CCEL_TABLE_SIZE:
        raise _table_error("length", 4, f"header says {length} bytes, data has {len(data)}, a CCEL table has {CCEL_TABLE_SIZE}")
    if sum(data) % 256:
        raise _table_error("checksum", 9, "the table bytes do not sum to zero")
    cc_type, cc_subtype = data[36], data[37]
    laml, lasa = struct.unpack_from("<QQ", data, 40)
    oem_id = data[10:16].decode("ascii", errors="replace").rstrip()
    oem_table_id = data[16:24].decode("ascii", errors="replace").rstrip()
    return CcelTable(data[8], oem_id, oem_table_id, cc_type, cc_subtype, laml, lasa)


def aael_tagged_data(entry: str) -> bytes:
    """The tagged-event bytes of an AAEL entry `"<domain> <operation> <content>"`."""
    text = entry.encode("utf-8")
    return struct.pack("<II", AAEL_TAG_ID, len(text)) + text


def aael_event(mr_index: int, entry: str, alg_id: int = ALG_SHA384) -> tuple[bytes, bytes]:
    """`(TCG_PCR_EVENT2 bytes, digest)` of one AAEL entry for register `mr_index`."""
    data = aael_tagged_data(entry)
    digest = hash_with(alg_id, data)
    if digest is None:
        raise ValueError(f"algorithm {alg_id:#06x} is not available")
    event = struct.pack("<IIIH", mr_index, EV_EVENT_TAG, 1, alg_id) + digest + struct.pack("<I", len(data)) + data
    return event, digest
