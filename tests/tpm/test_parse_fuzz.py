"""Random bytes only ever raise the parsers' own error types (no IndexError, struct.error, ...)."""

from __future__ import annotations

import pytest
from attestation_service.core.verifiers.azure import HclReportError, parse_hcl_report
from attestation_service.core.verifiers.tpm import TpmParseError, parse_attest, parse_signature
from hypothesis import given, settings
from hypothesis import strategies as st

QUOTE_PREFIX = bytes.fromhex("ff5443478018")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_attest_random(data: bytes) -> None:
    for candidate in (data, QUOTE_PREFIX + data):
        try:
            parse_attest(candidate)
        except TpmParseError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_signature_random(data: bytes) -> None:
    for candidate in (data, b"\x00\x14\x00\x0b" + data, b"\x00\x18\x00\x0b" + data):
        try:
            parse_signature(candidate)
        except TpmParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=3000))
def test_hcl_random(tail: bytes, var_size: int) -> None:
    data = b"HCLA" + bytes(0x4C0 - 4) + var_size.to_bytes(4, "little") * 5 + tail
    try:
        parse_hcl_report(data)
    except HclReportError:
        pass


def test_parse_errors_name_field_and_offset() -> None:
    with pytest.raises(TpmParseError, match=r"TPMS_ATTEST extraData: needs 32 bytes at offset 10, only 0 available"):
        parse_attest(QUOTE_PREFIX + b"\x00\x00" + b"\x00\x20")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just("00" * 32),
    lambda children: st.lists(children, max_size=25) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
_KEYS = st.sampled_from(["ak_public", "tpm_quote", "event_log", "ak_cert_chain", "version", "hcl_report", "vcek", "td_quote"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_evidence_json_random(evidence: dict[str, object]) -> None:
    """Wire JSON of any shape is either parsed or refused with the domain errors, never a raw exception."""
    from attestation_service.core.verifiers.azure import parse_azure_evidence
    from attestation_service.core.verifiers.tpm import parse_evidence

    from trustee_common.errors import TrusteeError

    for parse in (parse_evidence, lambda e: parse_azure_evidence(e, "az-snp-vtpm"), lambda e: parse_azure_evidence(e, "az-tdx-vtpm")):
        try:
            parse(evidence)
        except TrusteeError:
            pass
