"""Token freshness against the AS's appraisal epoch: pure decisions (docs/token-freshness.md).

A token from our AS carries the epoch it was appraised under
(`ear.trustee.appraisal-epoch`). The KBS knows a recent reading of the
current epoch (fetched from the AS at most `ttl` seconds ago). Equal: the
token is fresh. Different: either the token predates a change (stale), or
the reading predates the token (the guest attested again after a change the
reading has not seen yet). A reading whose fetch began after the request
arrived is at least as new as the token, so it decides; so does one taken
well after the token was issued. Otherwise the caller fetches once more
and asks again. Tokens without the claim (upstream's AS, other issuers) are
bounded by their `exp` only. Times are inputs; nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from trustee_common.epoch import CLAIM
from trustee_common.errors import StaleAttestationError

#: A token issued this long before a reading was taken cannot be newer than it
#: (the clock-skew leeway of `exp`).
ISSUED_LEEWAY_SECONDS = 60.0

STALE_DETAIL = (
    "attestation token predates a change of the attestation policy or reference values; attest again (new /auth and /attest)"
)


@dataclass(frozen=True)
class EpochReading:
    value: str
    #: Monotonic time at which the fetch that produced `value` began.
    started: float
    #: Wall-clock time of the same instant (compared with the token's `iat`).
    started_wall: float


class Verdict(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    RECHECK = "recheck"


def token_epoch(claims: dict[str, Any]) -> str | None:
    """The token's epoch claim; None when absent. A non-string claim is stale (fail closed)."""
    value = claims.get(CLAIM)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StaleAttestationError(STALE_DETAIL)
    return value


def _issued_at(claims: dict[str, Any]) -> float | None:
    value = claims.get("iat")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def judge(epoch: str, claims: dict[str, Any], reading: EpochReading, received: float) -> Verdict:
    """Compare the token's `epoch` with `reading`; `received` is the request's arrival (monotonic)."""
    if epoch == reading.value:
        return Verdict.FRESH
    if reading.started >= received:
        return Verdict.STALE
    issued = _issued_at(claims)
    if issued is not None and issued + ISSUED_LEEWAY_SECONDS < reading.started_wall:
        return Verdict.STALE
    return Verdict.RECHECK
