"""The KBS resource policy (trustee-server.md 5): Rego rule `allow` in `package policy`.

`input` is the verified token claims plus `submods.cpu` (a copy of
`submods.cpu0`, the path the user documentation uses); `data` is
`{"plugin", "resource-path": "<repo>/<type>/<tag>", "query": {...}}`.
Only a boolean `true` allows. The policy text is handed in by the caller
on every evaluation (it lives in shared storage, so replicas agree), and
compiled policies are cached by the text's digest.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Any

from trustee_common.rego import RegoPolicy

POLICY_NAMESPACE = "kbs"
POLICY_KEY = "resource-policy.rego"
CACHE_SIZE = 8


def policy_input(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims, with `submods.cpu` aliasing `submods.cpu0` when present."""
    result = copy.deepcopy(claims)
    submods = result.get("submods")
    if isinstance(submods, dict) and "cpu0" in submods:
        submods["cpu"] = copy.deepcopy(submods["cpu0"])
    return result


def policy_data(plugin: str, resource_path: str, query: dict[str, str]) -> dict[str, Any]:
    return {"plugin": plugin, "resource-path": resource_path, "query": dict(query)}


class ResourcePolicyEngine:
    """Compiles (once per distinct text) and evaluates resource policies."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, RegoPolicy] = OrderedDict()
        self._cache_size = cache_size

    def compile(self, text: str) -> RegoPolicy:
        """The compiled policy; `InvalidPolicyError` when it does not compile."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        policy = self._cache.get(digest)
        if policy is None:
            policy = RegoPolicy(text, package="policy", rules=("allow",))
            self._cache[digest] = policy
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(digest)
        return policy

    def allows(self, text: str, claims: dict[str, Any], data: dict[str, Any]) -> bool:
        """True only when `allow` evaluates to boolean true."""
        result = self.compile(text).evaluate(policy_input(claims), data)
        return result.get("allow") is True
