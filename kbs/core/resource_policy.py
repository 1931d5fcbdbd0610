"""The KBS resource policy (trustee-server.md 5): Rego rule `allow` in `package policy`.

`input` is the verified token claims plus `submods.cpu` (a copy of
`submods.cpu0`, the path the user documentation uses); `data` is
`{"plugin", "resource-path": "<repo>/<type>/<tag>", "query": {...}}`.
Only a boolean `true` allows. The policy text is handed in by the caller
on every evaluation (it lives in shared storage, so replicas agree).

What is compiled is the text alone (`resource_policy_spec`): the resource
path and the query string are per-request `data`, passed at evaluation, so
clients cannot make the KBS compile (or keep) more than one copy of a policy.
"""

from __future__ import annotations

import copy
from typing import Any

from trustee_common.rego import PolicySpec

POLICY_NAMESPACE = "kbs"
POLICY_KEY = "resource-policy.rego"
DATA_KEYS = ("plugin", "resource-path", "query")


def resource_policy_spec(text: str) -> PolicySpec:
    return PolicySpec(text, package="policy", rules=("allow",), data_keys=DATA_KEYS)


def policy_input(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims, with `submods.cpu` aliasing `submods.cpu0` when present."""
    result = copy.deepcopy(claims)
    submods = result.get("submods")
    if isinstance(submods, dict) and "cpu0" in submods:
        submods["cpu"] = copy.deepcopy(submods["cpu0"])
    return result


def policy_data(plugin: str, resource_path: str, query: dict[str, str]) -> dict[str, Any]:
    return {"plugin": plugin, "resource-path": resource_path, "query": dict(query)}


def allows(result: dict[str, Any]) -> bool:
    """True only when `allow` evaluated to boolean true."""
    return result.get("allow") is True
