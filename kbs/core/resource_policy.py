"""The KBS resource policy (trustee-server.md 5): Rego rule `allow` in `package policy`.

`input` is the verified token claims plus `submods.cpu` (a copy of
`submods.cpu0`, the path the user documentation uses); `data` is
`{"plugin", "resource-path", "query": {...}}`, where `resource-path` is the
string `"<repo>/<type>/<tag>"` or the list of its segments, whichever the
policy text uses (`kbs.core.resource_path_form`).
Only a boolean `true` allows. The policy text is handed in by the caller
on every evaluation (it lives in shared storage, so replicas agree).

What is compiled is the text alone (`resource_policy_spec`): the resource
path and the query string are per-request `data`, passed at evaluation, so
clients cannot make the KBS compile (or keep) more than one copy of a policy.

Giving a policy its input is most of an evaluation's cost (the claims are
~150 JSON nodes), so `policy_input` leaves out what a policy cannot read:
a text without the word `input` gets `{}` (Rego reaches the input only
through that keyword), and the `cpu` alias is added only when the text has
the identifier `cpu`. Both are decided from the text alone, so the outcome
of every policy is what it would be with the full input.
"""

from __future__ import annotations

import re
from typing import Any

from kbs.core.resource_path_form import STRING, PathForm
from trustee_common.rego import PolicySpec

POLICY_NAMESPACE = "kbs"
POLICY_KEY = "resource-policy.rego"
DATA_KEYS = ("plugin", "resource-path", "query")


def resource_policy_spec(text: str) -> PolicySpec:
    return PolicySpec(text, package="policy", rules=("allow",), data_keys=DATA_KEYS)


_CPU = re.compile(r"(?<![A-Za-z0-9_])cpu(?![A-Za-z0-9_])")


def reads_input(text: str) -> bool:
    return "input" in text


def reads_cpu_alias(text: str) -> bool:
    return _CPU.search(text) is not None


def policy_input(claims: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """The claims, with `submods.cpu` aliasing `submods.cpu0` when present; trimmed for `text` as above.

    The result shares the claims' nested objects (it is serialised for the
    policy worker, never changed)."""
    if text is not None and not reads_input(text):
        return {}
    submods = claims.get("submods")
    if not isinstance(submods, dict) or "cpu0" not in submods or (text is not None and not reads_cpu_alias(text)):
        return dict(claims)
    return {**claims, "submods": {**submods, "cpu": submods["cpu0"]}}


_STRING_FORM = PathForm(STRING, "")


def policy_data(plugin: str, resource_path: str, query: dict[str, str], form: PathForm = _STRING_FORM) -> dict[str, Any]:
    """`data` for one evaluation; `resource_path` ("repo/type/tag") given in `form`."""
    return {"plugin": plugin, "resource-path": form.value(resource_path), "query": dict(query)}


def allows(result: dict[str, Any]) -> bool:
    """True only when `allow` evaluated to boolean true."""
    return result.get("allow") is True
