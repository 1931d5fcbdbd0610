"""The KBS resource policy (trustee-server.md 5): Rego rule `allow` in `package policy`.

`input` is the verified token claims plus `submods.cpu` (a copy of
`submods.cpu0`, the path the user documentation uses) and `init_data` (ours:
the `init_data_claims` of `submods.cpu0`'s annotated evidence, i.e. the
init-data `[data]` map the AS bound to the TEE, e.g.
`input.init_data.instance_id`; absent when the guest sent no init-data or
the token already has a top-level `init_data` claim); `data` is
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
the identifier `cpu`, the `init_data` alias only when it has the identifier
`init_data`. All are decided from the text alone, so the outcome
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
_INIT_DATA = re.compile(r"(?<![A-Za-z0-9_])init_data(?![A-Za-z0-9_])")
INIT_DATA_ALIAS = "init_data"


def reads_input(text: str) -> bool:
    return "input" in text


def reads_cpu_alias(text: str) -> bool:
    return _CPU.search(text) is not None


def reads_init_data_alias(text: str) -> bool:
    return _INIT_DATA.search(text) is not None


def _init_data_claims(submods: dict[str, Any]) -> Any:
    cpu0 = submods.get("cpu0")
    annotated = cpu0.get("ear.veraison.annotated-evidence") if isinstance(cpu0, dict) else None
    return annotated.get("init_data_claims") if isinstance(annotated, dict) else None


def policy_input(claims: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """The claims, with `submods.cpu` aliasing `submods.cpu0` and `init_data` its init-data claims when present;
    trimmed for `text` as above.

    The result shares the claims' nested objects (it is serialised for the
    policy worker, never changed)."""
    if text is not None and not reads_input(text):
        return {}
    result = dict(claims)
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return result
    if "cpu0" in submods and (text is None or reads_cpu_alias(text)):
        result["submods"] = {**submods, "cpu": submods["cpu0"]}
    if INIT_DATA_ALIAS not in claims and (text is None or reads_init_data_alias(text)):
        init_data = _init_data_claims(submods)
        if init_data is not None:
            result[INIT_DATA_ALIAS] = init_data
    return result


_STRING_FORM = PathForm(STRING, "")


def policy_data(plugin: str, resource_path: str, query: dict[str, str], form: PathForm = _STRING_FORM) -> dict[str, Any]:
    """`data` for one evaluation; `resource_path` ("repo/type/tag") given in `form`."""
    return {"plugin": plugin, "resource-path": form.value(resource_path), "query": dict(query)}


def allows(result: dict[str, Any]) -> bool:
    """True only when `allow` evaluated to boolean true."""
    return result.get("allow") is True
