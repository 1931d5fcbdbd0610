"""Attestation (EAR) policies: ids, compilation, reference-value names.

A policy is Rego in `package policy` with rules `trust_claims` and
`extensions`. Policies call `query_reference_value("<name>")`; that
function is a helper module reading `data.reference_values[name]` (null
when absent), and the caller fills `data.reference_values` before
evaluating (it is per-evaluation data, never part of what is compiled).
`CompiledPolicy.reference_value_names` lists the string literals passed to
it (found once per text); it is None when some call passes a non-literal,
meaning "all reference values". `queried_names` is the same set restricted
to names the RVPS can store (others are always absent), sorted: what one
evaluation asks the RVPS (or the appraisal cache) for. `PolicyCache` keeps
these by text, bounded by count and total text size; a lookup hashes the
text once per string object (Python caches a str's hash), not per request. Compiling and evaluating happen in
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

from rvps.core.record import check_name
from trustee_common.errors import InvalidReferenceValueError, MalformedRequestError
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


def storable(name: str) -> bool:
    """Whether the RVPS can hold a value by this name (it answers absent for any other)."""
    try:
        check_name(name)
    except InvalidReferenceValueError:
        return False
    return True


@dataclass(frozen=True)
class CompiledPolicy:
    spec: PolicySpec
    reference_value_names: frozenset[str] | None
    #: The storable names among `reference_value_names`, sorted; None for all values.
    queried_names: tuple[str, ...] | None

    @staticmethod
    def data(reference_values: dict[str, Any]) -> dict[str, Any]:
        return {"reference_values": reference_values}


def compile_policy(text: str) -> CompiledPolicy:
    """The spec and reference-value names (the text is compiled by a policy worker)."""
    names = reference_value_names(text)
    queried = None if names is None else tuple(sorted(n for n in names if storable(n)))
    return CompiledPolicy(policy_spec(text), names, queried)


class PolicyCache:
    """LRU of prepared policies keyed by their text, bounded by count and total size."""

    def __init__(self, size: int = POLICY_CACHE_SIZE, max_bytes: int = POLICY_CACHE_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, CompiledPolicy] = OrderedDict()

    def get(self, text: str) -> CompiledPolicy:
        found = self._entries.get(text)
        if found is not None:
            self._entries.move_to_end(text)
            return found
        compiled = compile_policy(text)
        self._entries[text] = compiled
        while len(self._entries) > 1 and (len(self._entries) > self._size or self._bytes() > self._max_bytes):
            self._entries.popitem(last=False)
        return compiled

    def _bytes(self) -> int:
        return sum(entry.spec.size for entry in self._entries.values())
