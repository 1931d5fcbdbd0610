"""DCAP verification of the real corpus at its fixed times, and mutations rejected at the right step."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from attestation_service.core.verifiers.tdx import (
    CollateralVerifier,
    QuoteParseError,
    TdxCollateral,
    TdxVerificationError,
    TdxVerificationInput,
    TdxVerifier,
    evaluate_tdx_quote,
    replay_event_log,
    verify_tdx_quote,
)
from attestation_service.core.verifiers.tdx.collateral import ROOT_CA_SHA256, load_root_ca

from tests.tdx.corpus import CASES, DEBUG_TD, GCP, MUTATIONS, TDX, V4, V5, Case, at
from trustee_common.errors import EvidenceError, MalformedRequestError


def run(case: Case, quote: bytes | None = None, **kwargs: object) -> dict[str, object]:
    request = TdxVerificationInput(quote if quote is not None else case.quote, case.now, case.collateral, **kwargs)  # type: ignore[arg-type]
    return verify_tdx_quote(request, event_log_replayer=replay_event_log)


def test_pinned_root() -> None:
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    assert hashlib.sha256(load_root_ca().public_bytes(Encoding.DER)).hexdigest() == ROOT_CA_SHA256
    assert (TDX / "intel-sgx-root-ca.der").read_bytes() == load_root_ca().public_bytes(Encoding.DER)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_verdicts(case: Case) -> None:
    report = evaluate_tdx_quote(TdxVerificationInput(case.quote, case.now, case.collateral))
    if case.rejected_at is None:
        assert report, report.error
        assert report.claims is not None
        if case.tcb_status is not None:
            assert report.claims["tcb_status"] == case.tcb_status
            assert report.claims["advisory_ids"] == []
            assert report.claims["collateral_expiration_status"] == "0"
        else:  # no collateral: signatures and QE binding only, the rest reported as skipped
            outcomes = {s.number: s.outcome for s in report.steps}
            assert [outcomes[n] for n in (1, 4, 7, 8, 10)] == ["pass"] * 5
            assert [outcomes[n] for n in (3, 5, 6, 9, 11, 12, 13)] == ["skipped"] * 7
    else:
        assert not report
        assert str(report.error).startswith(case.rejected_at)
        assert "no TCB level matches" in str(report.error)
        assert [s.outcome for s in report.steps][:10] == ["pass"] * 10


def test_v4_claims_use_upstream_names() -> None:
    claims = run(V4)
    quote = claims["quote"]
    assert isinstance(quote, dict)
    assert quote["header"]["version"] == "0400"
    assert quote["header"]["tee_type"] == "81000000"
    assert quote["header"]["vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"
    assert set(quote["body"]) >= {"tcb_svn", "mr_seam", "mrsigner_seam", "mr_td", "mr_config_id", "rtmr_0", "rtmr_3", "report_data"}
    assert "type" not in quote
    expected = {"debug": False, "septve_disable": True, "protection_keys": False, "key_locker": False, "perfmon": False}
    assert claims["td_attributes"] == expected
    assert claims["tcb_date"] == "2024-03-13T00:00:00Z"
    assert claims["report_data"] == quote["body"]["report_data"]
    assert claims["init_data"] == quote["body"]["mr_config_id"]


def test_v5_claims_have_type_size_and_td15_fields() -> None:
    report = evaluate_tdx_quote(TdxVerificationInput(V5.quote, V5.now, None))
    assert report.claims is not None
    assert report.claims["quote"]["type"] == "0300"
    assert report.claims["quote"]["size"] == "88020000"
    assert {"tee_tcb_svn2", "mr_servicetd"} <= set(report.claims["quote"]["body"])


def test_debug_td_is_flagged() -> None:
    report = evaluate_tdx_quote(TdxVerificationInput(DEBUG_TD.quote, DEBUG_TD.now, None))
    assert report.claims is not None and report.claims["td_attributes"]["debug"] is True


@pytest.mark.parametrize("name", MUTATIONS)
def test_mutations_rejected_at_the_right_step(name: str) -> None:
    mutate, step = MUTATIONS[name]
    with pytest.raises(EvidenceError) as caught:
        run(V4, mutate(V4.quote))
    assert caught.value.detail.startswith(step), caught.value.detail


def test_truncation_is_a_parse_error() -> None:
    with pytest.raises(QuoteParseError, match=r"^step 1 \(quote header and layout\): "):
        run(V4, V4.quote[:1000])


def test_collateral_of_another_fmspc_is_rejected() -> None:
    request = TdxVerificationInput(V4.quote, V5.now, V5.collateral)
    with pytest.raises(TdxVerificationError, match=r"^step 5 \(PCK and TCB Info match\): PCK FMSPC B0C06F000000 does not match"):
        verify_tdx_quote(request)


@pytest.mark.parametrize("when", ["2025-08-01T00:00:00Z", "2025-06-01T00:00:00Z"])
def test_clock_outside_the_collateral_window(when: str) -> None:
    with pytest.raises(TdxVerificationError, match=r"^step 3 \(collateral integrity\): collateral is not current"):
        verify_tdx_quote(TdxVerificationInput(V4.quote, at(when), V4.collateral))


def test_expired_collateral_is_reported_when_allowed() -> None:
    claims = verify_tdx_quote(TdxVerificationInput(V4.quote, at("2025-08-01T00:00:00Z"), V4.collateral, accept_expired_collateral=True))
    assert claims["collateral_expiration_status"] == "1"
    assert claims["tcb_status"] == "UpToDate"


def _tamper_collateral(field: str, value: str) -> TdxCollateral:
    data = json.loads((V4.folder / "collateral.json").read_text())
    data[field] = value
    return TdxCollateral.from_json(data)


def test_tampered_tcb_info_is_rejected_at_step_3() -> None:
    raw = json.loads((V4.folder / "collateral.json").read_text())["tcb_info"]
    bad = _tamper_collateral("tcb_info", raw.replace('"UpToDate"', '"OutOfDate"', 1))
    with pytest.raises(TdxVerificationError, match=r"^step 3 \(collateral integrity\): tcb_info: signature does not verify"):
        verify_tdx_quote(TdxVerificationInput(V4.quote, V4.now, bad))


def test_tampered_crl_is_rejected_at_step_3() -> None:
    crl = json.loads((V4.folder / "collateral.json").read_text())["pck_crl"]
    bad = _tamper_collateral("pck_crl", crl[:-4] + ("00" if crl[-4:-2] != "00" else "11") + crl[-2:])
    with pytest.raises(TdxVerificationError, match=r"^step 3 \(collateral integrity\): pck_crl"):
        verify_tdx_quote(TdxVerificationInput(V4.quote, V4.now, bad))


def test_collateral_verified_once_per_bundle() -> None:
    verifier = CollateralVerifier()
    for _ in range(3):
        verify_tdx_quote(TdxVerificationInput(V4.quote, V4.now, V4.collateral), verifier)
    assert verifier.verifications == 1


def test_signed_pck_chain_is_remembered_but_times_are_checked_on_every_quote() -> None:
    """The PCK chain's signatures are checked once per chain (SIGNED_PCK_CHAINS); a later quote with the same
    chain still has every certificate's validity checked against its own time, and a changed chain is checked anew."""
    from attestation_service.core.verifiers.tdx.steps import SIGNED_PCK_CHAINS
    from cryptography import x509 as x509_module

    SIGNED_PCK_CHAINS.clear()
    run(V4)
    hits = SIGNED_PCK_CHAINS.hits
    run(V4)
    assert SIGNED_PCK_CHAINS.hits == hits + 1 and len(SIGNED_PCK_CHAINS) == 1
    leaf = x509_module.load_pem_x509_certificates(V4.quote[V4.quote.index(b"-----BEGIN"):])[0]
    after = leaf.not_valid_after_utc.replace(microsecond=0) + datetime.timedelta(days=1)
    with pytest.raises(TdxVerificationError, match=r"^step 4 \(PCK certificate chain\): .* is not valid at "):
        verify_tdx_quote(TdxVerificationInput(V4.quote, after, None))
    mutate, step = MUTATIONS["certification data (PCK chain)"]
    with pytest.raises(EvidenceError) as caught:
        run(V4, mutate(V4.quote))
    assert caught.value.detail.startswith(step)


def test_report_data_binding() -> None:
    report_data = bytes.fromhex(str(run(V4)["report_data"]))
    run(V4, report_data=report_data)
    run(V4, report_data=report_data + b"ignored beyond 64 bytes")
    with pytest.raises(TdxVerificationError, match=r"^step 14 \(report data binding\)"):
        run(V4, report_data=b"\x01" * 32)


def test_init_data_binding_pads_to_48_bytes() -> None:
    run(V4, init_data_hash=b"")  # mr_config_id is all zero
    with pytest.raises(TdxVerificationError, match=r"^step 15 \(init data binding\)"):
        run(V4, init_data_hash=b"\x01" * 32)


def test_event_log_replay_matches_gcp_rtmrs() -> None:
    log = (GCP.folder / "ccel_data.bin").read_bytes()
    claims = verify_tdx_quote(TdxVerificationInput(GCP.quote, GCP.now, None, event_log=log), event_log_replayer=replay_event_log)
    events = claims["uefi_event_logs"]
    assert isinstance(events, list) and events and "type_name" in events[0]


def test_event_log_mismatch_names_the_rtmr() -> None:
    log = (GCP.folder / "ccel_data.bin").read_bytes()
    with pytest.raises(TdxVerificationError, match=r"^step 16 \(event log replay\): RTMR0: "):
        verify_tdx_quote(TdxVerificationInput(DEBUG_TD.quote, DEBUG_TD.now, None, event_log=log), event_log_replayer=replay_event_log)


# --- the AS verifier --------------------------------------------------------------------------


def wire(quote: bytes, log: bytes | None = None) -> dict[str, object]:
    return {"quote": base64.b64encode(quote).decode(), "cc_eventlog": None if log is None else base64.b64encode(log).decode()}


def test_as_verifier_selects_collateral_by_fmspc() -> None:
    bundles = {("b0c06f000000", "platform"): V4.collateral, ("90c06f000000", "platform"): V5.collateral}
    verifier = TdxVerifier(lambda fmspc, ca: bundles.get((fmspc, ca)))
    [(claims, tee_class)] = verifier.evaluate(wire(V4.quote), None, None, V4.now)
    assert (claims["tcb_status"], tee_class) == ("UpToDate", "cpu")
    with pytest.raises(TdxVerificationError, match=r"^step 11 \(platform TCB level\)"):
        verifier.evaluate(wire(V5.quote), None, None, V5.now)


def test_as_verifier_refuses_without_collateral() -> None:
    with pytest.raises(TdxVerificationError, match=r"^step 3 \(collateral integrity\): no collateral for FMSPC 00806F050000"):
        TdxVerifier().evaluate(wire(GCP.quote), None, None, GCP.now)


def test_as_verifier_pinned_time() -> None:
    verifier = TdxVerifier(lambda fmspc, ca: V4.collateral, verification_time=V4.now)
    [(claims, _)] = verifier.evaluate(wire(V4.quote), None, None, at("2030-01-01T00:00:00Z"))
    assert claims["tcb_status"] == "UpToDate"


@pytest.mark.parametrize(
    ("evidence", "message"),
    [([], "must be a JSON object"), ({}, "'quote' is missing"), ({"quote": "a-b_"}, "not standard (padded) base64"),
     ({"quote": "AAAA", "cc_eventlog": 1}, "'cc_eventlog' must be a string or null")],
)
def test_as_verifier_malformed_evidence(evidence: object, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TdxVerifier().evaluate(evidence, None, None, V4.now)
