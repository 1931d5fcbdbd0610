"""Parse a TCG event log (crypto-agile, or SHA-1 legacy), replay it, and make claims.

Layout (evidence.md 4.5): the first event has the legacy SHA-1 layout
(`TCG_PCR_EVENT`: u32 register, u32 type, 20-byte digest, u32 size, data).
When it is an `EV_NO_ACTION` carrying `TCG_EfiSpecIdEvent` ("Spec ID
Event03", or an all-zero signature as in the header the attestation agent
writes before an AAEL when there is no CCEL), the log is crypto-agile: every later event is `TCG_PCR_EVENT2`
(u32 register, u32 type, u32 digest count, (u16 algorithm, digest) each,
u32 size, data) with the algorithms and sizes the Spec ID event declares.
Otherwise the whole log is SHA-1 legacy events. The log ends at its last
byte or at 8 bytes that are all 0xFF or all 0x00 (the CCEL buffer padding
and the terminator the guest appends, guest-components.md 2.6).

For TDX (CCEL) the register number is the MR index: 0 = MRTD, 1..4 =
RTMR0..3; `EventLog.replay` recomputes RTMR0..3 from SHA-384 digests.
Anything truncated or inconsistent raises `EventLogParseError` naming the
field and its byte offset; sizes and counts are bounded. Pure, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Any

from attestation_service.core.eventlog.details import Details, event_details
from attestation_service.core.eventlog.names import (
    ALG_SHA1,
    ALG_SHA384,
    ALGORITHMS,
    EV_NO_ACTION,
    algorithm_name,
    event_type_name,
    hash_with,
)
from trustee_common.errors import EvidenceError

#: Largest event log accepted (real CCEL buffers are 64 KiB to a few MiB).
MAX_LOG_SIZE = 16 * 1024 * 1024
#: Most events accepted in one log.
MAX_EVENTS = 100_000
#: Most algorithms a Spec ID event may declare.
MAX_ALGORITHMS = 16
#: Largest digest size a Spec ID event may declare for any algorithm.
MAX_DIGEST_SIZE = 128

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
# The header the attestation agent prepends to an AAEL-only log has an all-zero
# signature (guest-components.md 2.6); it is read as a Spec ID event too.
_TERMINATORS = (b"\xff" * 8, b"\x00" * 8)
_RTMR_SIZE = 48


class EventLogParseError(EvidenceError):
    """An event log that is truncated or inconsistent (or cannot be replayed)."""

    def __init__(self, detail: str, *, field: str = "", offset: int = -1) -> None:
        super().__init__(detail)
        self.field = field
        self.offset = offset


def _error(field_name: str, offset: int, problem: str) -> EventLogParseError:
    return EventLogParseError(f"event log: {field_name} at offset {offset}: {problem}", field=field_name, offset=offset)


@dataclass(frozen=True, slots=True)
class EventDigest:
    alg_id: int
    digest: bytes

    @property
    def alg(self) -> str:
        """Upstream's algorithm name (`SHA-384`, ...)."""
        return algorithm_name(self.alg_id)


@dataclass(frozen=True, slots=True)
class Event:
    #: Position in the log, counting the header event as 0.
    index: int
    #: Register the event extends (CCEL: MR index, 1..4 = RTMR0..3).
    mr_index: int
    event_type: int
    type_name: str
    digests: tuple[EventDigest, ...]
    event: bytes
    #: Byte offset of the event's first field in the log.
    offset: int
    details: Details = field(default_factory=dict, compare=False)

    def digest(self, alg_id: int) -> bytes | None:
        return next((d.digest for d in self.digests if d.alg_id == alg_id), None)

    def digest_matches_event(self) -> bool:
        """Every digest equals the hash of the event data (upstream's `digest_matches_event`)."""
        return all(hash_with(d.alg_id, self.event) == d.digest for d in self.digests)

    def to_claim(self) -> dict[str, Any]:
        return {
            "index": self.mr_index,
            "type_name": self.type_name,
            "digest_matches_event": self.digest_matches_event(),
            "digests": [{"alg": d.alg, "digest": d.digest.hex()} for d in self.digests],
            "event": base64.b64encode(self.event).decode("ascii"),
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class EventLog:
    #: The first (legacy-format) event: the Spec ID event of a crypto-agile log.
    header: Event
    #: Events after the header (for a SHA-1 legacy log, the header is the first of them too).
    events: tuple[Event, ...]
    #: Algorithm id -> digest size, as the Spec ID event declares (SHA-1 only for legacy logs).
    algorithms: dict[int, int]
    crypto_agile: bool

    def replay(self, registers: int = 4, alg_id: int = ALG_SHA384) -> list[bytes]:
        """Registers MR index 1..`registers` (RTMR0..), from zero, extending `H(reg || digest)`.

        `EV_NO_ACTION` events are skipped; events for other indices are
        ignored. An event for a replayed index without an `alg_id` digest
        raises `EventLogParseError`.
        """
        name = ALGORITHMS[alg_id][1]
        values = [bytes(hashlib.new(name).digest_size) for _ in range(registers)]
        for event in self.events:
            if event.event_type == EV_NO_ACTION or not 1 <= event.mr_index <= registers:
                continue
            digest = event.digest(alg_id)
            if digest is None:
                raise _error("digests", event.offset, f"event {event.index} has no {algorithm_name(alg_id)} digest to replay")
            values[event.mr_index - 1] = hashlib.new(name, values[event.mr_index - 1] + digest).digest()
        return values

    def check_rtmrs(self, rtmrs: list[bytes]) -> None:
        """Raise `EventLogParseError` unless replaying gives exactly `rtmrs` (RTMR0..3)."""
        replayed = self.replay(len(rtmrs))
        for number, (expected, actual) in enumerate(zip(rtmrs, replayed, strict=True)):
            if len(expected) != _RTMR_SIZE or not hmac.compare_digest(expected, actual):
                raise EventLogParseError(f"event log: replay gives RTMR{number} {actual.hex()}, the quote has {expected.hex()}")

    def to_claims(self) -> list[dict[str, Any]]:
        """Upstream's `uefi_event_logs` (the Spec ID header is left out, as upstream)."""
        return [event.to_claim() for event in self.events]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, field_name: str) -> bytes:
        if size > self.left():
            raise _error(field_name, self.offset, f"needs {size} bytes, only {self.left()} left")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field_name))[0]
        return value

    def u32(self, field_name: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field_name))[0]
        return value

    def sized(self, field_name: str) -> bytes:
        """A u32 size field and that many bytes."""
        at = self.offset
        size = self.u32(field_name + " size")
        if size > self.left():
            raise _error(field_name + " size", at, f"event size {size} exceeds the {self.left()} bytes left")
        return self.take(size, field_name)

    def at_end(self) -> bool:
        """True at the end of the data, at a terminator, or in trailing padding shorter than 8 bytes."""
        rest = self.data[self.offset : self.offset + 8]
        if len(rest) == 8:
            return rest in _TERMINATORS
        return rest in (b"\xff" * len(rest), b"\x00" * len(rest))


def _legacy_event(reader: _Reader, index: int) -> Event:
    start = reader.offset
    mr_index, event_type = reader.u32("register index"), reader.u32("event type")
    digest = reader.take(20, "SHA-1 digest")
    data = reader.sized("event data")
    return Event(index, mr_index, event_type, event_type_name(event_type), (EventDigest(ALG_SHA1, digest),), data, start)


def _spec_id_algorithms(header: Event) -> dict[int, int] | None:
    """Algorithm id -> digest size from a `TCG_EfiSpecIdEvent`, or None if `header` is not one."""
    if header.event_type != EV_NO_ACTION or header.event[:16] not in (SPEC_ID_SIGNATURE, bytes(16)):
        return None
    reader = _Reader(header.event)
    reader.take(len(SPEC_ID_SIGNATURE) + 8, "Spec ID header")  # platform class, versions, errata, uintn size
    base = header.offset + 32
    count = reader.u32("Spec ID numberOfAlgorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise _error("Spec ID numberOfAlgorithms", base + reader.offset - 4, f"{count} is not in 1..{MAX_ALGORITHMS}")
    algorithms: dict[int, int] = {}
    for _ in range(count):
        at = base + reader.offset
        alg_id, size = reader.u16("Spec ID algorithm id"), reader.u16("Spec ID digest size")
        known = ALGORITHMS.get(alg_id)
        if alg_id in algorithms or not 1 <= size <= MAX_DIGEST_SIZE or (known is not None and known[2] != size):
            raise _error("Spec ID digest size", at, f"algorithm {alg_id:#06x} declared twice or with a wrong size {size}")
        algorithms[alg_id] = size
    vendor_size = reader.u8("Spec ID vendorInfoSize")
    reader.take(vendor_size, "Spec ID vendorInfo")
    if reader.left():
        raise _error("Spec ID event", base + reader.offset, f"{reader.left()} bytes after vendorInfo")
    return algorithms


def _agile_event(reader: _Reader, index: int, algorithms: dict[int, int]) -> Event:
    start = reader.offset
    mr_index, event_type = reader.u32("register index"), reader.u32("event type")
    count_at = reader.offset
    count = reader.u32("digest count")
    if not 1 <= count <= len(algorithms):
        raise _error("digest count", count_at, f"{count} is not in 1..{len(algorithms)} (the Spec ID event's algorithms)")
    digests: list[EventDigest] = []
    for _ in range(count):
        at = reader.offset
        alg_id = reader.u16("digest algorithm")
        if alg_id not in algorithms or any(d.alg_id == alg_id for d in digests):
            raise _error("digest algorithm", at, f"{alg_id:#06x} is not declared by the Spec ID event or repeats")
        digests.append(EventDigest(alg_id, reader.take(algorithms[alg_id], "digest")))
    data = reader.sized("event data")
    return Event(index, mr_index, event_type, event_type_name(event_type), tuple(digests), data, start)


def parse_event_log(data: bytes) -> EventLog:
    """Parse a CCEL/TCG event log; raise `EventLogParseError` naming the field and offset."""
    if len(data) > MAX_LOG_SIZE:
        raise _error("event log", 0, f"{len(data)} bytes is more than the {MAX_LOG_SIZE} allowed")
    reader = _Reader(bytes(data))
    header = _legacy_event(reader, 0)
    algorithms = _spec_id_algorithms(header)
    events: list[Event] = [] if algorithms is not None else [header]
    while not reader.at_end():
        if len(events) >= MAX_EVENTS:
            raise _error("event", reader.offset, f"more than {MAX_EVENTS} events")
        index = len(events) + (1 if algorithms is not None else 0)
        events.append(_agile_event(reader, index, algorithms) if algorithms is not None else _legacy_event(reader, index))
    decoded = tuple(
        Event(e.index, e.mr_index, e.event_type, e.type_name, e.digests, e.event, e.offset, event_details(e.event_type, e.event))
        for e in events
    )
    return EventLog(header, decoded, algorithms or {ALG_SHA1: 20}, algorithms is not None)
