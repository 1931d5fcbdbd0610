"""Replay a TCG PC Client event log into TPM PCR values (evidence.md 4.5).

PCRs 0-16 and 23 start at zero, 17-22 at all-0xFF. A `StartupLocality`
`EV_NO_ACTION` event sets PCR 0's initial last byte to its locality;
other `EV_NO_ACTION` events are skipped. Extend rule `PCR = H(PCR || digest)`
in the requested bank. Pure; failures are `EventLogParseError`.
"""

from __future__ import annotations

import hashlib

from attestation_service.core.eventlog.log import EventLog, EventLogParseError
from attestation_service.core.eventlog.names import ALG_SHA256, ALGORITHMS, EV_NO_ACTION, algorithm_name

PCR_COUNT = 24
_STARTUP_LOCALITY = b"StartupLocality\x00"


def initial_pcr(index: int, size: int) -> bytes:
    return b"\xff" * size if 17 <= index <= 22 else bytes(size)


def replay_pcrs(log: EventLog, alg_id: int = ALG_SHA256) -> list[bytes]:
    """PCR 0..23 of bank `alg_id` after replaying every event of `log` from the reset values."""
    if alg_id not in ALGORITHMS:
        raise EventLogParseError(f"event log: algorithm {alg_id:#06x} is not known")
    name, size = ALGORITHMS[alg_id][1], ALGORITHMS[alg_id][2]
    values = [initial_pcr(i, size) for i in range(PCR_COUNT)]
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            if event.mr_index == 0 and event.event[:16] == _STARTUP_LOCALITY and len(event.event) >= 17:
                values[0] = bytes(size - 1) + event.event[16:17]
            continue
        if not 0 <= event.mr_index < PCR_COUNT:
            raise EventLogParseError(f"event log: event {event.index} extends PCR {event.mr_index}, not in 0..23")
        digest = event.digest(alg_id)
        if digest is None:
            raise EventLogParseError(f"event log: event {event.index} has no {algorithm_name(alg_id)} digest to replay")
        values[event.mr_index] = hashlib.new(name, values[event.mr_index] + digest).digest()
    return values
