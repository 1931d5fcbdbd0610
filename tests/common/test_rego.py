"""RegoPolicy: compile once per data document, refuse bad policies up front."""

import pytest

from trustee_common.errors import InvalidPolicyError
from trustee_common.rego import RegoPolicy

POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data.plugin == "resource"
    split(data["resource-path"], "/")[0] == input.repo
}
"""


def test_policy_reads_input_and_data() -> None:
    policy = RegoPolicy(POLICY)
    data = {"plugin": "resource", "resource-path": "one/two/three", "query": {}}
    assert policy.evaluate({"repo": "one"}, data) == {"allow": True}
    assert policy.evaluate({"repo": "two"}, data) == {"allow": False}
    assert policy.evaluate({"repo": "two"}, {**data, "resource-path": "two/x/y"}) == {"allow": True}


def test_bundles_are_cached_per_data_document() -> None:
    policy = RegoPolicy(POLICY)
    data = {"plugin": "resource", "resource-path": "one/two/three"}
    policy.evaluate({"repo": "one"}, data)
    cached = len(policy._bundles)
    for _ in range(5):
        policy.evaluate({"repo": "one"}, dict(data))
    assert len(policy._bundles) == cached


def test_undefined_rule_is_absent() -> None:
    assert RegoPolicy("package policy\nallow if { input.x == 1 }").evaluate({"x": 2}) == {}


def test_helper_modules_share_the_package() -> None:
    helper = 'package policy\nquery_reference_value(id) := v if { v := data.reference_values[id] } else := null\n'
    policy = RegoPolicy(
        'package policy\nimport rego.v1\nallow if { input.svn in query_reference_value("svn") }', helpers=(helper,)
    )
    assert policy.evaluate({"svn": "1"}, {"reference_values": {"svn": ["1"]}}) == {"allow": True}
    assert policy.evaluate({"svn": "1"}, {"reference_values": {}}) == {}


@pytest.mark.parametrize("text", ["package policy\nallow if {{", "package policy\nallow := input.x +"])
def test_bad_policies_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidPolicyError, match="does not compile"):
        RegoPolicy(text)


def test_oversized_policy_is_refused() -> None:
    with pytest.raises(InvalidPolicyError, match="larger"):
        RegoPolicy("package policy\n" + "#" * (1 << 20))


@pytest.mark.parametrize("text", ["not rego", "package other\nallow := true", "# package policy\nallow := true"])
def test_policy_must_declare_the_expected_package(text: str) -> None:
    with pytest.raises(InvalidPolicyError, match="package policy"):
        RegoPolicy(text)


def test_runtime_errors_surface_as_our_error() -> None:
    from trustee_common.errors import InternalError

    policy = RegoPolicy('package policy\nallow := {"a": 1 / input.x}')
    assert policy.evaluate({"x": 2}) == {"allow": {"a": 0.5}}
    with pytest.raises(InternalError, match="evaluation of allow failed"):
        policy.evaluate({"x": 0})
