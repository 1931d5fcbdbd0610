"""AR4SI trust vectors, tiers and the per-submod EAR appraisal.

A policy's `trust_claims` is `{claim: int}` with the eight AR4SI names;
an undefined rule means all eight are 0; an unknown name or a value that
is not an integer in -128..127 is an `InvalidPolicyError` naming it. Tiers
follow rust-ear: -1..1 none, |v| < 32 affirming, |v| < 96 warning, else
contraindicated; `ear.status` is the worst tier. `extensions` is a list
of `{"name", "key", "value"}` whose values are added to the appraisal under
`name` (trustee-server.md 6.4 steps 6-7, 6.5).
"""

from __future__ import annotations

from typing import Any

from trustee_common.errors import InvalidPolicyError

TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
TIERS = ("none", "affirming", "warning", "contraindicated")
RESERVED_APPRAISAL_KEYS = frozenset(
    {"ear.status", "ear.trustworthiness-vector", "ear.appraisal-policy-id", "ear.veraison.annotated-evidence"}
)


def trust_vector(value: object, policy: str) -> dict[str, int]:
    if value is None:
        return dict.fromkeys(TRUST_CLAIMS, 0)
    if not isinstance(value, dict):
        raise InvalidPolicyError(f"policy {policy}: trust_claims must be an object")
    unknown = sorted(set(value) - set(TRUST_CLAIMS))
    if unknown:
        raise InvalidPolicyError(f"policy {policy}: unknown trust claim(s) {', '.join(map(repr, unknown))}")
    vector: dict[str, int] = {}
    for name in TRUST_CLAIMS:
        if name not in value:
            continue
        claim = value[name]
        if isinstance(claim, bool) or not isinstance(claim, int) or not -128 <= claim <= 127:
            raise InvalidPolicyError(f"policy {policy}: trust claim {name!r} must be an integer in -128..127, got {claim!r}")
        vector[name] = claim
    return vector


def tier(value: int) -> str:
    if -1 <= value <= 1:
        return "none"
    if abs(value) < 32:
        return "affirming"
    if abs(value) < 96:
        return "warning"
    return "contraindicated"


def status(vector: dict[str, int]) -> str:
    return max((tier(v) for v in vector.values()), key=TIERS.index, default="none")


def extension_claims(value: object, policy: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidPolicyError(f"policy {policy}: extensions must be an array")
    found: dict[str, Any] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"name", "key", "value"}:
            raise InvalidPolicyError(f"policy {policy}: extensions[{i}] must be an object with name, key and value")
        name, key = item["name"], item["key"]
        if not isinstance(name, str) or name in RESERVED_APPRAISAL_KEYS or name in found:
            raise InvalidPolicyError(f"policy {policy}: extensions[{i}] has an invalid or duplicate name {name!r}")
        if isinstance(key, bool) or not isinstance(key, int) or not -(2**31) <= key < 2**31:
            raise InvalidPolicyError(f"policy {policy}: extensions[{i}] key must be a 32-bit integer")
        found[name] = item["value"]
    return found


def appraisal(policy_id: str, policy: str, annotated: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One submod of the EAR from a policy result `{"trust_claims"?, "extensions"?}`."""
    vector = trust_vector(result.get("trust_claims"), policy)
    return {
        "ear.status": status(vector),
        "ear.trustworthiness-vector": vector,
        "ear.appraisal-policy-id": policy_id,
        "ear.veraison.annotated-evidence": annotated,
        **extension_claims(result.get("extensions"), policy),
    }
