"""Intel QVL TCB rules that the corpus does not exercise: level matching and status convergence."""

from __future__ import annotations

import pytest
from attestation_service.core.verifiers.tdx.tcb import (
    TcbLevel,
    converge,
    match_platform_level,
    relaunch_status,
    union,
)

from tests.tdx.corpus import at

DATE = at("2024-01-01T00:00:00Z")


def level(tdx: list[int], status: str, sgx: int = 1, pce: int = 1) -> TcbLevel:
    return TcbLevel((sgx,) * 16, pce, tuple(tdx + [0] * (16 - len(tdx))), DATE, status, ())


def svn(*values: int) -> bytes:
    return bytes(values).ljust(16, b"\0")


def test_components_0_and_1_skipped_when_module_major_is_set() -> None:
    """Intel skips TDX components 0 and 1 for module major > 0 (dcap-qvl compares all 16: a named difference)."""
    levels = [level([5, 0, 3], "UpToDate"), level([2, 0, 3], "OutOfDate")]
    assert match_platform_level(levels, (1,) * 16, 1, svn(4, 1, 3)) == levels[0]
    assert match_platform_level(levels, (1,) * 16, 1, svn(4, 0, 3)) == levels[1]  # TDX 1.0 module: all indices compared


def test_sgx_components_and_pcesvn_must_all_be_met() -> None:
    levels = [level([0], "UpToDate", sgx=2, pce=2), level([0], "OutOfDate", sgx=1, pce=1)]
    assert match_platform_level(levels, (2,) * 16, 1, svn(0)) == levels[1]
    assert match_platform_level(levels, (2,) * 8 + (1,) + (2,) * 7, 2, svn(0)) == levels[1]
    assert match_platform_level(levels, (0,) * 16, 5, svn(0)) is None


@pytest.mark.parametrize(
    ("platform", "other", "expected"),
    [
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        # Intel: OutOfDateConfigurationNeeded; dcap-qvl's max-severity gives OutOfDate (named difference).
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("UpToDate", "Revoked", "Revoked"),
        ("ConfigurationNeeded", "UpToDate", "ConfigurationNeeded"),
    ],
)
def test_intel_convergence(platform: str, other: str, expected: str) -> None:
    assert converge(platform, other) == expected


def test_td_relaunch_advice() -> None:
    assert relaunch_status("OutOfDate", "UpToDate") == "TDRelaunchAdvised"
    assert relaunch_status("OutOfDateConfigurationNeeded", "ConfigurationNeeded") == "TDRelaunchAdvisedConfigurationNeeded"
    assert relaunch_status("OutOfDate", "OutOfDate") == "OutOfDate"
    assert relaunch_status("UpToDate", "UpToDate") == "UpToDate"


def test_advisory_union_keeps_order() -> None:
    assert union(["A", "B"], (), ["B", "C"]) == ["A", "B", "C"]
