"""Truncated or inconsistent logs raise EventLogParseError naming field and offset; nothing else escapes."""

from __future__ import annotations

import struct

import pytest
from attestation_service.core.eventlog import MAX_LOG_SIZE, EventLogParseError, parse_event_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustee_common.errors import EvidenceError

from .builders import SHA384, agile_log, event2, spec_id_header

HEADER = spec_id_header([(SHA384, 48)])
FIRST = len(HEADER)  # offset of the first TCG_PCR_EVENT2


def _raises_at(data: bytes, field: str, offset: int) -> EventLogParseError:
    with pytest.raises(EventLogParseError) as caught:
        parse_event_log(data)
    error = caught.value
    assert isinstance(error, EvidenceError)
    assert (error.field, error.offset) == (field, offset), error.detail
    assert f"at offset {offset}" in error.detail and field in error.detail
    return error


def test_truncated_real_log_names_the_offset(gcp_log: bytes) -> None:
    # The GCP log's 3rd event (a 53-byte EFI variable) starts at 297; its data at 297 + 66.
    start = 297
    assert struct.unpack_from("<I", gcp_log, start + 4)[0] == 0x80000001
    error = _raises_at(gcp_log[: start + 66 + 10], "event data size", start + 62)
    assert "event size 53 exceeds the 10 bytes left" in error.detail
    _raises_at(gcp_log[: start + 20], "digest", start + 14)


def test_truncated_inside_a_digest() -> None:
    data = HEADER + event2(1, 4, bytes(4))[:30]
    _raises_at(data, "digest", FIRST + 14)


def test_bad_digest_count() -> None:
    event = bytearray(event2(1, 4, bytes(4)))
    event[8:12] = struct.pack("<I", 2)  # only SHA-384 is declared
    error = _raises_at(HEADER + bytes(event), "digest count", FIRST + 8)
    assert "2 is not in 1..1" in error.detail
    event[8:12] = struct.pack("<I", 0)
    _raises_at(HEADER + bytes(event), "digest count", FIRST + 8)


def test_undeclared_digest_algorithm() -> None:
    event = bytearray(event2(1, 4, bytes(4)))
    event[12:14] = struct.pack("<H", 0x000B)
    _raises_at(HEADER + bytes(event), "digest algorithm", FIRST + 12)


def test_oversized_event_size() -> None:
    event = bytearray(event2(1, 4, bytes(4)))
    size_at = 12 + 2 + 48
    event[size_at : size_at + 4] = struct.pack("<I", 0xFFFFFFF0)
    error = _raises_at(HEADER + bytes(event) + b"\xff" * 8, "event data size", FIRST + size_at)
    assert "event size 4294967280 exceeds" in error.detail


def test_oversized_spec_id_event() -> None:
    header = bytearray(HEADER)
    header[28:32] = struct.pack("<I", 1000)
    _raises_at(bytes(header), "event data size", 28)


def test_inconsistent_spec_id_event() -> None:
    _raises_at(spec_id_header([(SHA384, 32)]), "Spec ID digest size", 32 + 28)
    _raises_at(spec_id_header([(SHA384, 48), (SHA384, 48)]), "Spec ID digest size", 32 + 32)
    _raises_at(spec_id_header([]), "Spec ID numberOfAlgorithms", 32 + 24)
    extra = bytearray(HEADER + b"!")
    extra[28:32] = struct.pack("<I", len(HEADER) - 32 + 1)
    _raises_at(bytes(extra), "Spec ID event", len(HEADER))


def test_garbage_after_the_last_event() -> None:
    data = agile_log(event2(1, 4, bytes(4)))[:-8] + b"\x01\x02\x03"
    _raises_at(data, "register index", len(data) - 3)


def test_empty_and_oversized_input() -> None:
    _raises_at(b"", "register index", 0)
    _raises_at(b"\x00" * (MAX_LOG_SIZE + 1), "event log", 0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_the_parse_error(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except EventLogParseError:
        return
    log.to_claims()
    try:
        log.replay()
    except EventLogParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=400))
def test_random_events_after_a_valid_header_only_raise_the_parse_error(tail: bytes, cut: int) -> None:
    data = (HEADER + event2(2, 0x80000003, tail) + tail)[: len(HEADER) + cut]
    try:
        parse_event_log(data).to_claims()
    except EventLogParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=17999), st.integers(min_value=0, max_value=255))
def test_single_byte_flips_in_the_real_log_only_raise_the_parse_error(gcp_log: bytes, position: int, value: int) -> None:
    data = bytearray(gcp_log[:18101])
    data[position] = value
    try:
        log = parse_event_log(bytes(data))
        log.to_claims()
        log.replay()
    except EventLogParseError:
        pass


def test_event_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from attestation_service.core.eventlog import log as log_module

    monkeypatch.setattr(log_module, "MAX_EVENTS", 3)
    parse_event_log(agile_log(*[event2(1, 4, bytes(4))] * 3))
    data = agile_log(*[event2(1, 4, bytes(4))] * 4)
    _raises_at(data, "event", FIRST + 3 * len(event2(1, 4, bytes(4))))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([0x1, 0x5, 0x6, 0xA, 0xD, 0x80000001, 0x80000003, 0x80000007, 0x8000000B, 0x800000E0]), st.binary(max_size=300))
def test_detail_decoders_never_raise(event_type: int, data: bytes) -> None:
    import json

    from attestation_service.core.eventlog import event_details

    json.dumps(event_details(event_type, data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_device_path_rendering_never_raises(path: bytes) -> None:
    from attestation_service.core.eventlog import event_details

    details = event_details(0x80000003, struct.pack("<QQQQ", 0, 0, 0, len(path)) + path)
    assert set(details) <= {"device_paths"}
