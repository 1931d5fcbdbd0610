"""The quote parser: the real corpus, layout offsets, and only `QuoteParseError` on bad input."""

from __future__ import annotations

import pytest
from attestation_service.core.verifiers.tdx import QuoteParseError, parse_quote
from attestation_service.core.verifiers.tdx.quote import MAX_QUOTE_SIZE, TdReport15
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tdx.corpus import CASES, DEBUG_TD, GCP, V4, V5, Case
from trustee_common.errors import EvidenceError


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_quotes_parse(case: Case) -> None:
    quote = parse_quote(case.quote)
    assert quote.header.tee_type == 0x81
    assert quote.header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert len(quote.certification.qe_auth_data) == 32
    assert quote.certification.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3


def test_v4_layout() -> None:
    quote = parse_quote(V4.quote)
    assert (quote.header.version, quote.body_type, len(quote.signed_region), quote.used_size) == (4, 2, 632, 4936)
    assert quote.body.tee_tcb_svn[:3] == bytes([6, 1, 3])
    assert quote.certification.qe_report.raw == V4.quote[770:1154]
    assert quote.signature == V4.quote[636:700]


def test_v5_type3_layout() -> None:
    quote = parse_quote(V5.quote)
    assert (quote.header.version, quote.body_type, quote.body_size, len(quote.signed_region)) == (5, 3, 648, 702)
    assert isinstance(quote.body, TdReport15)
    assert quote.body.tee_tcb_svn2[:3] == bytes([0x0D, 1, 3])
    assert quote.body.report_data == V5.quote[574:638]


def test_padding_after_auth_data_is_ignored() -> None:
    assert len(GCP.quote) == 8000
    assert parse_quote(GCP.quote).used_size == 4935


def test_debug_td_attribute_is_parsed() -> None:
    assert parse_quote(DEBUG_TD.quote).body.td_attributes[0] & 1 == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda q: b"\x03\x00" + q[2:], r"header.version \(offset 0\): 3"),
        (lambda q: q[:40], r"header.user_data: needs 20 bytes at offset 28, only 12 available"),
        (lambda q: q[:700], r"signature_data.length \(offset 632\)"),
        (lambda q: q[:764] + b"\x05\x00" + q[766:], r"certification_data.type \(offset 764\): 5"),
        (lambda q: q[:632] + (10**6).to_bytes(4, "little") + q[636:], r"signature_data.length \(offset 632\): 1000000 exceeds"),
        (lambda q: q + bytes(MAX_QUOTE_SIZE), r"exceeds the limit"),
    ],
)
def test_malformed_quotes_name_field_and_offset(mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(QuoteParseError, match=message):
        parse_quote(mutate(V4.quote))


def test_parse_error_is_an_evidence_error() -> None:
    assert issubclass(QuoteParseError, EvidenceError)


def test_v5_descriptor_checked() -> None:
    bad_type = V5.quote[:48] + (1).to_bytes(2, "little") + V5.quote[50:]
    with pytest.raises(QuoteParseError, match=r"body_descriptor.type \(offset 48\): 1"):
        parse_quote(bad_type)
    bad_size = V5.quote[:50] + (584).to_bytes(4, "little") + V5.quote[54:]
    with pytest.raises(QuoteParseError, match=r"body_descriptor.size \(offset 50\): 584, expected 648"):
        parse_quote(bad_size)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=6000))
def test_random_bytes_only_raise_quote_parse_error(data: bytes) -> None:
    try:
        parse_quote(data)
    except QuoteParseError:
        pass


@settings(max_examples=300)
@given(st.sampled_from([V4, V5, GCP, DEBUG_TD]), st.data())
def test_truncations_of_real_quotes(case: Case, data: st.DataObject) -> None:
    quote = case.quote
    used = parse_quote(quote).used_size
    cut = data.draw(st.integers(min_value=0, max_value=len(quote)))
    if cut >= used:
        assert parse_quote(quote[:cut]).used_size == used
    else:
        with pytest.raises(QuoteParseError):
            parse_quote(quote[:cut])


@settings(max_examples=300)
@given(st.sampled_from([V4, V5]), st.data())
def test_random_byte_changes_only_raise_quote_parse_error(case: Case, data: st.DataObject) -> None:
    quote = bytearray(case.quote)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(quote) - 1))
        quote[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        parse_quote(bytes(quote))
    except QuoteParseError:
        pass
