"""TCG / CCEL event logs for TDX evidence: parse, replay, claims (pure, no I/O).

The DCAP verifier calls `parse_event_log(cc_eventlog bytes)`, checks
`EventLog.replay()` (or `check_rtmrs`) against the quote's RTMR0..3 and
puts `EventLog.to_claims()` in the `uefi_event_logs` claim. Every failure
is an `EventLogParseError` (an `EvidenceError`). The TPM verifiers use
`replay_pcrs` (PCR banks of a TCG PC Client log).
"""

from attestation_service.core.eventlog.ccel import CcelTable, aael_event, aael_tagged_data, parse_ccel_table
from attestation_service.core.eventlog.details import AAEL_TAG_ID, device_path_nodes, event_details
from attestation_service.core.eventlog.log import (
    MAX_EVENTS,
    MAX_LOG_SIZE,
    Event,
    EventDigest,
    EventLog,
    EventLogParseError,
    parse_event_log,
)
from attestation_service.core.eventlog.names import event_type_name
from attestation_service.core.eventlog.pcr import PCR_COUNT, replay_pcrs

__all__ = [
    "AAEL_TAG_ID",
    "MAX_EVENTS",
    "MAX_LOG_SIZE",
    "PCR_COUNT",
    "CcelTable",
    "Event",
    "EventDigest",
    "EventLog",
    "EventLogParseError",
    "aael_event",
    "aael_tagged_data",
    "device_path_nodes",
    "event_details",
    "event_type_name",
    "parse_ccel_table",
    "parse_event_log",
    "replay_pcrs",
]
