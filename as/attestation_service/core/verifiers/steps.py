"""Numbered verification steps, shared by every hardware verifier (pure).

A verifier lists its steps as `(number, name, check)`; a check returns a
one-line detail, raises `SkipStep` when it has nothing to check (e.g. no
expected report data), or raises an `EvidenceError`. `run_steps` records
each outcome in a `VerificationReport` and stops at the first failure,
whose error names the step: `step N (name): detail`. Tools print the
report (`trustee verify`); services call `raise_for_failure`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trustee_common.errors import EvidenceError

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"

C = TypeVar("C")


class SkipStep(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The step has nothing to check; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int
    name: str
    outcome: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"step": self.number, "name": self.name, "outcome": self.outcome, "detail": self.detail}


@dataclass
class VerificationReport:
    """Every step up to the first failure; true when nothing failed."""

    steps: list[StepResult] = field(default_factory=list)
    claims: dict[str, Any] | None = None
    error: EvidenceError | None = None

    def __bool__(self) -> bool:
        return self.error is None

    def raise_for_failure(self) -> None:
        if self.error is not None:
            raise self.error


def fail_step(
    report: VerificationReport, number: int, name: str, exc: EvidenceError, error_type: type[EvidenceError] | None = None
) -> VerificationReport:
    """Record a failed step; the report's error (of `error_type`, else `exc`'s type) names it."""
    report.steps.append(StepResult(number, name, FAIL, exc.detail))
    report.error = (error_type or type(exc))(f"step {number} ({name}): {exc.detail}")
    return report


def run_steps(
    report: VerificationReport,
    ctx: C,
    steps: Sequence[tuple[int, str, Callable[[C], str]]],
    error_type: type[EvidenceError] | None = None,
) -> bool:
    """Run `steps` in order into `report`; False at the first failure."""
    for number, name, check in steps:
        try:
            detail = check(ctx)
        except SkipStep as skip:
            report.steps.append(StepResult(number, name, SKIPPED, skip.reason))
            continue
        except EvidenceError as exc:
            fail_step(report, number, name, exc, error_type)
            return False
        report.steps.append(StepResult(number, name, PASS, detail))
    return True
