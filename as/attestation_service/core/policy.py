"""Attestation (EAR) policies: ids, compilation, reference-value names.

A policy is Rego in `package policy` with rules `trust_claims` and
`extensions`. Policies call `query_reference_value("<name>")`; that
function is a helper module reading `data.reference_values[name]` (null
when absent), and the caller fills `data.reference_values` before
evaluating (it is per-evaluation data, never part of what is compiled).
`CompiledPolicy.reference_value_names` lists the string literals passed to
it (found once per text); it is None when some call passes a non-literal,
meaning "all reference values". `PolicyCache` keeps these by text digest,
bounded by count and total text size. Compiling and evaluating happen in
policy worker processes (`trustee_common.rego_pool`) from `CompiledPolicy.spec`.
Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from trustee_common.errors import MalformedRequestError
from trustee_common.rego import PolicySpec

RULES = ("trust_claims", "extensions")
DATA_KEYS = ("reference_values",)
DEFAULT_POLICY_ID = "default"
POLICY_CACHE_SIZE = 32
POLICY_CACHE_BYTES = 16 << 20
_POLICY_ID = re.compile(r"^[A-Za-z0-9_\-.]+$")
MAX_POLICY_ID_LENGTH = 200

REFERENCE_VALUE_HELPER = """package policy

import rego.v1

query_reference_value(name) := value if {
\tvalue := data.reference_values[name]
} else := null
"""

_STRING_OR_COMMENT = re.compile(r'("(?:[^"\\\n]|\\.)*"|`[^`]*`)|#[^\n]*')
_CALL = re.compile(r"\bquery_reference_value\s*\(")
_LITERAL_CALL = re.compile(r'\bquery_reference_value\s*\(\s*("(?:[^"\\\n]|\\.)*"|`[^`]*`)\s*\)')


def check_policy_id(policy_id: str) -> str:
    if not policy_id or len(policy_id) > MAX_POLICY_ID_LENGTH or not _POLICY_ID.fullmatch(policy_id) or policy_id.startswith("."):
        raise MalformedRequestError(
            f"policy id {policy_id!r} is invalid: use 1-{MAX_POLICY_ID_LENGTH} of [A-Za-z0-9_-.], not starting with '.'"
        )
    return policy_id


def policy_digest(text: str) -> str:
    """Hex SHA-384 of the policy text (`PolicyInfo.policy_hash`)."""
    return hashlib.sha384(text.encode("utf-8")).hexdigest()


def reference_value_names(text: str) -> frozenset[str] | None:
    """Names passed as literals to `query_reference_value`; None if any call is not a literal."""
    code = _STRING_OR_COMMENT.sub(lambda m: m.group(1) or "", text)
    literals = _LITERAL_CALL.findall(code)
    if _CALL.search(_STRING_OR_COMMENT.sub("", _LITERAL_CALL.sub("", code))):
        return None
    return frozenset(json.loads(lit) if lit.startswith('"') else lit[1:-1] for lit in literals)


def policy_spec(text: str) -> PolicySpec:
    """What the policy workers compile: the text, the reference-value helper, `data.reference_values`."""
    return PolicySpec(text, package="policy", rules=RULES, helpers=(REFERENCE_VALUE_HELPER,), data_keys=DATA_KEYS)


@dataclass(frozen=True)
class CompiledPolicy:
    spec: PolicySpec
    reference_value_names: frozenset[str] | None

    @staticmethod
    def data(reference_values: dict[str, Any]) -> dict[str, Any]:
        return {"reference_values": reference_values}


def compile_policy(text: str) -> CompiledPolicy:
    """The spec and reference-value names (the text is compiled by a policy worker)."""
    return CompiledPolicy(policy_spec(text), reference_value_names(text))


class PolicyCache:
    """LRU of prepared policies keyed by the digest of their text, bounded by count and total size."""

    def __init__(self, size: int = POLICY_CACHE_SIZE, max_bytes: int = POLICY_CACHE_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, CompiledPolicy] = OrderedDict()

    def get(self, text: str) -> CompiledPolicy:
        key = policy_digest(text)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        compiled = compile_policy(text)
        self._entries[key] = compiled
        while len(self._entries) > 1 and (len(self._entries) > self._size or self._bytes() > self._max_bytes):
            self._entries.popitem(last=False)
        return compiled

    def _bytes(self) -> int:
        return sum(entry.spec.size for entry in self._entries.values())
