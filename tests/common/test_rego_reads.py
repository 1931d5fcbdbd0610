"""What a policy can read of `input`, decided from its text, and the trimmed input it is evaluated on.

The decisive property: a policy gives the same result on the trimmed input
as on the full one. It is checked with real regopy evaluations of the AS's
default policies and of policies that reach the input in every way Rego
allows.
"""

from __future__ import annotations

import copy
import json

import pytest
from attestation_service.core.policy import CompiledPolicy, policy_spec
from attestation_service.policies import default_policies

from trustee_common.rego import PolicySpec, RegoPolicy
from trustee_common.rego_reads import input_paths, trim_input

CLAIMS = {
    "sample": {"svn": "1", "launch_digest": "abcde", "platform_version": {"major": 1, "minor": 4}, "debug": False},
    "report_data": "nonce-bound-value",
    "runtime_data_claims": {"nonce": "n-1", "tee-pubkey": {"kty": "EC", "x": "x1", "y": "y1"}},
    "snp": {"measurement": "m", "vmpl": 0, "policy_debug_allowed": False, "report_data": "r"},
    "init_data_claims": {"agent_policy_claims": {"containers": [1, 2]}, "instance_id": "a"},
    "tdx": {
        "quote": {"header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
                  "body": {"mr_td": "aa", "xfam": "e7", "rtmr_1": "r1", "report_data": "per-request"}},
        "tcb_status": "UpToDate", "collateral_expiration_status": "0", "td_attributes": {"debug": False},
        "uefi_event_logs": [],
    },
    "list": [{"a": 1}, {"a": 2}],
    "input": {"shadow": True},
}


def paths(text: str) -> list[tuple[str, ...]] | None:
    found = input_paths([text])
    return None if found is None else sorted(found)


def test_static_references_are_the_paths_read() -> None:
    text = '''package policy
import rego.v1
# input[x] in a comment, and "input" in a string, do not count
allow if {
    input.sample.svn == "1"
    input["sample"]["platform_version"].major >= 1
    input[`snp`].measurement == "input"
    x := input.list[0]
    some k, v in input.init_data_claims
    data.input.y == 2
}
'''
    assert paths(text) == [("init_data_claims",), ("list",), ("sample", "platform_version", "major"), ("sample", "svn"),
                           ("snp", "measurement")]
    assert paths("package policy\nallow := true\n") == []


@pytest.mark.parametrize("use", [
    "input",  # the whole input compared or bound
    "input[x]",  # iterated with a variable
    'object.get(input, "sample", {})',  # passed whole to a function
    "walk(input)",
    '"a" in input',
    "x with input as {}",
    'input["bad\\q"]',  # a literal that is not a string OPA accepts
])
def test_any_other_use_may_read_everything(use: str) -> None:
    assert paths(f"package policy\nimport rego.v1\nallow if {{ y := {use} }}\n") is None


def test_import_of_input_and_template_strings_may_read_everything() -> None:
    assert paths("package policy\nimport input.sample as s\nallow if { s.svn == 1 }\n") is None
    assert paths('package policy\nallow := $"{input.sample}"\n') is None


def test_every_module_counts() -> None:
    assert input_paths(["package policy\nallow := input.a\n", "package policy\nb := input.b.c\n"]) == {("a",), ("b", "c")}
    assert input_paths(["package policy\nallow := input.a\n", "package policy\nb := input\n"]) is None


def test_trimming_keeps_the_subtrees_and_leaves_the_input_alone() -> None:
    original = copy.deepcopy(CLAIMS)
    kept = trim_input(CLAIMS, frozenset({("sample", "svn"), ("snp",), ("snp", "vmpl"), ("list", "a"), ("absent", "x")}))
    assert kept == {"sample": {"svn": "1"}, "snp": CLAIMS["snp"]}  # `list` is an array: list.a resolves to nothing
    assert CLAIMS == original
    assert trim_input(CLAIMS, None) is CLAIMS
    assert trim_input(CLAIMS, frozenset()) == {}
    assert trim_input([1, 2], frozenset({("a",)})) == [1, 2]


REFERENCE_VALUES = {"mr_td": ["aa"], "xfam": ["e7"], "svn": ["1"], "launch_digest": ["abcde"], "major_version": 1}
POLICIES = [
    *default_policies().values(),
    'package policy\nimport rego.v1\ndefault allow := false\nallow if { input.sample.svn == "1"; input.snp.vmpl == 0 }\n',
    "package policy\nimport rego.v1\nn := count(input.init_data_claims.agent_policy_claims.containers)\nm := input.list[1].a\n",
    'package policy\nimport rego.v1\nnames := {k | input[k]}\nraw := input["runtime_data_claims"]["tee-pubkey"].x\n',
    "package policy\nimport rego.v1\nshadow := input.input.shadow\nmissing := input.sample.nothing.deeper\n",
]


@pytest.mark.parametrize("text", POLICIES)
def test_a_policy_gives_the_same_result_on_the_trimmed_input(text: str) -> None:
    spec = policy_spec(text)
    if text not in default_policies().values():
        spec = PolicySpec(text, rules=("allow", "names", "raw", "n", "m", "shadow", "missing"), data_keys=spec.data_keys)
    policy = RegoPolicy.from_spec(spec)
    found = input_paths([text])
    outcomes = []
    other_td = {**CLAIMS["tdx"], "quote": {**CLAIMS["tdx"]["quote"], "body": {**CLAIMS["tdx"]["quote"]["body"], "mr_td": "bb"}}}
    variants = (CLAIMS, {**CLAIMS, "sample": {**CLAIMS["sample"], "svn": "2"}}, {**CLAIMS, "tdx": other_td}, {"sample": 1}, {})
    for variant in variants:
        full = policy.evaluate(variant, CompiledPolicy.data(REFERENCE_VALUES))
        trimmed = policy.evaluate(trim_input(variant, found), CompiledPolicy.data(REFERENCE_VALUES))
        assert json.dumps(full, sort_keys=True) == json.dumps(trimmed, sort_keys=True), (text, variant)
        outcomes.append(full)
    assert outcomes[0], text  # the full claims define something to compare
    if text == default_policies()["default_cpu"]:  # the TDX rules (reached through a function) decided both ways
        assert outcomes[0]["trust_claims"]["hardware"] == 2 and outcomes[2]["trust_claims"]["hardware"] == 97, outcomes
