"""SNP report parsing: the corpus, both wire forms, errors naming field and offset, and random input."""

from __future__ import annotations

import json

import pytest
from attestation_service.core.verifiers.snp import (
    SnpReportParseError,
    SnpVerifier,
    parse_evidence,
    parse_report,
    report_from_json,
    report_to_json,
)
from attestation_service.core.verifiers.snp.report import REPORT_SIZE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.snp.corpus import GENOA, MILAN, VLEK, Case
from trustee_common.errors import EvidenceError, MalformedRequestError


@pytest.mark.parametrize("case", [MILAN, GENOA, VLEK], ids=lambda c: c.name)
def test_corpus_reports_parse_and_round_trip(case: Case) -> None:
    report = parse_report(case.report)
    assert report_from_json(report_to_json(report)) == case.report
    assert report.sig_algo == 1


def test_genoa_wire_json_is_the_v3_report() -> None:
    raw = parse_evidence(GENOA.wire_json).report
    report = parse_report(raw)
    assert (report.version, report.cpuid, report.product) == (3, (0x19, 0xA0, 2), "Genoa")
    no_mit = {"launch_mit_vector": None, "current_mit_vector": None}
    assert report_to_json(report) | no_mit == GENOA.wire_json["attestation_report"] | no_mit


def test_layouts() -> None:
    milan, vlek = parse_report(MILAN.report), parse_report(VLEK.report)
    assert milan.version == 2 and milan.cpuid is None and milan.product is None
    assert (milan.reported_tcb.bootloader, milan.reported_tcb.snp, milan.reported_tcb.microcode) == (3, 8, 115)
    assert vlek.vmpl == 1 and vlek.signing_key == 1 and vlek.product == "Milan"
    assert milan.current_version == (1, 52, 4)


def _v5(raw: bytes) -> bytes:
    return (5).to_bytes(4, "little") + raw[4:0x1F8] + (7).to_bytes(8, "little") + (9).to_bytes(8, "little") + raw[0x208:]


def test_v4_and_v5_layouts() -> None:
    v4 = parse_report((4).to_bytes(4, "little") + VLEK.report[4:])
    assert v4.version == 4 and v4.launch_mit_vector is None
    v5 = parse_report(_v5(VLEK.report))
    assert (v5.launch_mit_vector, v5.current_mit_vector) == (7, 9)
    assert report_from_json(report_to_json(v5)) == v5.raw


def test_turin_tcb_layout() -> None:
    raw = bytearray(VLEK.report)
    raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x00])
    for at in (0x38, 0x180, 0x1E0, 0x1F0):  # every TCB in the Turin layout (bytes 4-6 reserved)
        raw[at : at + 8] = bytes([1, 2, 3, 4, 0, 0, 0, 5])
    report = parse_report(bytes(raw))
    assert report.product == "Turin"
    t = report.reported_tcb
    assert (t.fmc, t.bootloader, t.tee, t.snp, t.microcode) == (1, 2, 3, 4, 5)
    assert report_from_json(report_to_json(report)) == bytes(raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[:100], r"report: 100 bytes"),
        (lambda r: r + b"\0", r"report: 1185 bytes"),
        (lambda r: bytes([1]) + r[1:], r"version \(offset 0x000\): 1"),
        (lambda r: r[:0x34] + bytes([2]) + r[0x35:], r"signature_algo \(offset 0x034\): 2"),
        (lambda r: r[:0x0A] + bytes([0]) + r[0x0B:], r"policy \(offset 0x008\): .* reserved bit 17"),
        (lambda r: r[:0x48] + bytes([0x08]) + r[0x49:], r"signer_info.signing_key \(offset 0x048\): 2"),
        (lambda r: r[:0x4C] + bytes([1]) + r[0x4D:], r"reserved0 \(offset 0x04c\): must be zero"),
        (lambda r: r[:0x200] + bytes([1]) + r[0x201:], r"mit_vectors \(v5 only\) \(offset 0x1f8\)"),
        (lambda r: r[:0x400] + bytes([1]) + r[0x401:], r"signature.reserved \(offset 0x330\)"),
    ],
)
def test_malformed_reports_name_field_and_offset(mutate: object, message: str) -> None:
    with pytest.raises(SnpReportParseError, match=message):
        parse_report(mutate(MILAN.report))  # type: ignore[operator]


def test_parse_error_is_an_evidence_error() -> None:
    assert issubclass(SnpReportParseError, EvidenceError)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", "3", r"attestation_report.version: must be an unsigned 32-bit integer"),
        ("measurement", [0] * 47, r"attestation_report.measurement: must be an array of 48 byte values"),
        ("chip_id", [256] * 64, r"attestation_report.chip_id\[\]"),
        ("reported_tcb", {"bootloader": 1}, r"attestation_report.reported_tcb.tee"),
        ("signature", {"r": [0] * 72}, r"attestation_report.signature.s"),
        ("current", None, r"attestation_report.current: must be an object"),
    ],
)
def test_malformed_wire_json_names_the_field(field: str, value: object, message: str) -> None:
    obj = json.loads(json.dumps(GENOA.wire_json["attestation_report"]))
    obj[field] = value
    with pytest.raises(SnpReportParseError, match=message):
        report_from_json(obj)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_bytes_only_raise_the_parse_error(data: bytes) -> None:
    try:
        parse_report(data)
    except SnpReportParseError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_random_reports_only_raise_the_parse_error(data: bytes) -> None:
    try:
        parse_report(data)
    except SnpReportParseError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_random_byte_changes_only_raise_the_parse_error(data: st.DataObject) -> None:
    raw = bytearray(MILAN.report)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, REPORT_SIZE - 1))] = data.draw(st.integers(0, 255))
    try:
        report = parse_report(bytes(raw))
    except SnpReportParseError:
        return
    tcb_reserved = [raw[at + 2 : at + 6] for at in (0x38, 0x180, 0x1E0, 0x1F0)]
    version_reserved = [raw[0x1EB], raw[0x1EF]]
    if not any(any(r) for r in tcb_reserved) and not any(version_reserved):  # the wire object has no place for these
        assert report_from_json(report_to_json(report)) == bytes(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 2**64) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values)
def test_random_json_only_raises_the_parse_error(value: object) -> None:
    try:
        report_from_json(value)
    except SnpReportParseError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["attestation_report", "cert_chain", "x"]), json_values, max_size=3))
def test_random_evidence_only_raises_request_or_evidence_errors(evidence: dict[str, object]) -> None:
    try:
        SnpVerifier().evaluate(evidence, None, None, GENOA.now)
    except (MalformedRequestError, EvidenceError):
        pass
