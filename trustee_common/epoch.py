"""Appraisal epochs: an opaque marker in shared storage that changes on every appraisal-relevant write.

The Attestation Service keeps one for its attestation policies, the RVPS one
for its reference values (namespace `appraisal_epoch`, keys `attestation-policy`
and `reference-value`). A change writes its data first and then a fresh
random marker; an appraisal reads the marker first and then the data. A
token stamped with a marker was therefore appraised under data at least as
new as that marker, and the marker differs from the current one as soon as
any later change is committed (docs/token-freshness.md). Random markers
need no atomic counter: concurrent writers on several replicas each write
a value no reader has seen before, and the last one stays.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from trustee_common.storage.base import KeyValueStore

#: The private EAR claim holding the epoch a token was appraised under.
CLAIM = "ear.trustee.appraisal-epoch"
NAMESPACE = "appraisal_epoch"
POLICY_KEY = "attestation-policy"
REFERENCE_VALUE_KEY = "reference-value"
#: The marker of a store in which nothing was ever changed.
INITIAL = "0"
#: The part an RVPS without epoch support (upstream's) contributes.
UNSUPPORTED = "none"
MARKER_BYTES = 16


async def read_epoch(store: KeyValueStore, key: str) -> str:
    raw = await store.get(NAMESPACE, key)
    if raw is None:
        return INITIAL
    return raw.decode("ascii", errors="replace")


async def bump_epoch(store: KeyValueStore, key: str, random_hex: Callable[[int], str] = secrets.token_hex) -> str:
    """Write and return a new marker; call it after the change itself is committed."""
    marker = random_hex(MARKER_BYTES)
    await store.put(NAMESPACE, key, marker.encode("ascii"))
    return marker


def combined(policy_epoch: str, reference_value_epoch: str) -> str:
    """The AS's appraisal epoch: both parts, so a change of either changes it."""
    return f"p:{policy_epoch}.rv:{reference_value_epoch}"
