"""Agreement with the `dcap-qvl` package (test-only oracle) on the corpus.

Known differences with Intel QVL semantics (evidence.md 1.6), which this
verifier follows: dcap-qvl compares all 16 TDX TCB components (Intel skips
0 and 1 when the module major version is > 0), takes the maximum status
severity instead of Intel's convergence rules, fails hard on expired
collateral (Intel reports `collateral_expiration_status`), and checks
SEPT_VE_DISABLE / reserved TD attributes as its own policy. None of them
changes a verdict on this corpus; the expired-collateral case is checked
as a named difference below.
"""

from __future__ import annotations

import datetime

import pytest
from attestation_service.core.verifiers.tdx import TdxVerificationInput, evaluate_tdx_quote

from tests.tdx.corpus import MUTATIONS, V4, V5, Case, at

dcap_qvl = pytest.importorskip("dcap_qvl", reason="the dcap-qvl wheel is not installed for this platform")


def oracle(case: Case, now: datetime.datetime, collateral: Case | None = None) -> tuple[str | None, str | None]:
    """(status, error) from dcap-qvl."""
    source = collateral or case
    assert source.collateral_path is not None
    bundle = dcap_qvl.QuoteCollateralV3.from_json(source.collateral_path.read_text())
    try:
        report = dcap_qvl.verify(case.quote, bundle, int(now.timestamp()))
    except ValueError as exc:
        return None, str(exc)
    return str(report.status), None


def ours(case: Case, now: datetime.datetime, collateral: Case | None = None, **kwargs: bool) -> tuple[str | None, str | None]:
    report = evaluate_tdx_quote(TdxVerificationInput(case.quote, now, (collateral or case).collateral, **kwargs))
    if report.error is not None:
        return None, report.error.detail
    assert report.claims is not None
    return str(report.claims["tcb_status"]), None


def test_v4_up_to_date_agrees() -> None:
    theirs, mine = oracle(V4, V4.now), ours(V4, V4.now)
    assert theirs == mine == ("UpToDate", None)
    report = dcap_qvl.verify(V4.quote, dcap_qvl.QuoteCollateralV3.from_json(V4.collateral_path.read_text()), int(V4.now.timestamp()))  # type: ignore[union-attr]
    assert list(report.advisory_ids) == []


def test_v5_no_tcb_level_agrees() -> None:
    (theirs_status, theirs_error), (mine_status, mine_error) = oracle(V5, V5.now), ours(V5, V5.now)
    assert theirs_status is None and mine_status is None
    assert theirs_error is not None and "No matching TCB level" in theirs_error
    assert mine_error is not None and mine_error.startswith("step 11 (platform TCB level): TCB_NOT_SUPPORTED")


def test_fmspc_mismatch_agrees() -> None:
    (_, theirs), (_, mine) = oracle(V4, V5.now, V5), ours(V4, V5.now, V5)
    assert theirs is not None and "Fmspc mismatch" in theirs
    assert mine is not None and mine.startswith("step 5 (PCK and TCB Info match)")


def test_named_difference_expired_collateral() -> None:
    """Intel QVL semantics: expired collateral is a flag; dcap-qvl fails hard. With the flag refused (our default) both reject."""
    later = at("2025-08-01T00:00:00Z")
    (_, theirs), (_, mine) = oracle(V4, later), ours(V4, later)
    assert theirs is not None and mine is not None and mine.startswith("step 3 (collateral integrity)")
    assert ours(V4, later, accept_expired_collateral=True) == ("UpToDate", None)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutations_rejected_by_both(name: str) -> None:
    mutate, step = MUTATIONS[name]
    quote = mutate(V4.quote)
    bundle = dcap_qvl.QuoteCollateralV3.from_json(V4.collateral_path.read_text())  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        dcap_qvl.verify(quote, bundle, int(V4.now.timestamp()))
    report = evaluate_tdx_quote(TdxVerificationInput(quote, V4.now, V4.collateral))
    assert report.error is not None and report.error.detail.startswith(step)
