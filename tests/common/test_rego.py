"""RegoPolicy: compile once per text (data is per evaluation), refuse bad policies up front."""

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


DATA_KEYS = ("plugin", "resource-path", "query")


def test_policy_reads_input_and_data() -> None:
    policy = RegoPolicy(POLICY, data_keys=DATA_KEYS)
    data = {"plugin": "resource", "resource-path": "one/two/three", "query": {}}
    assert policy.evaluate({"repo": "one"}, data) == {"allow": True}
    assert policy.evaluate({"repo": "two"}, data) == {"allow": False}
    assert policy.evaluate({"repo": "two"}, {**data, "resource-path": "two/x/y"}) == {"allow": True}


def test_data_is_not_compiled_in() -> None:
    """One bundle serves every data document: distinct query strings cost no compilation."""
    policy = RegoPolicy(POLICY + 'deny_q if { data.query.q == "7" }\n', rules=("allow", "deny_q"), data_keys=DATA_KEYS)
    bundle = policy._bundle
    for n in range(50):
        data = {"plugin": "resource", "resource-path": "one/two/three", "query": {"q": str(n)}}
        result = policy.evaluate({"repo": "one"}, data)
        assert result == ({"allow": True, "deny_q": True} if n == 7 else {"allow": True})
    assert policy._bundle is bundle


def test_undeclared_data_key_is_refused() -> None:
    from trustee_common.errors import InternalError

    with pytest.raises(InternalError, match="undeclared"):
        RegoPolicy(POLICY, data_keys=("plugin",)).evaluate({"repo": "one"}, {"query": {}})


def test_undefined_rule_is_absent() -> None:
    assert RegoPolicy("package policy\nallow if { input.x == 1 }").evaluate({"x": 2}) == {}


def test_helper_modules_share_the_package() -> None:
    helper = 'package policy\nquery_reference_value(id) := v if { v := data.reference_values[id] } else := null\n'
    policy = RegoPolicy(
        'package policy\nimport rego.v1\nallow if { input.svn in query_reference_value("svn") }',
        helpers=(helper,),
        data_keys=("reference_values",),
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
    with pytest.raises(InternalError, match="evaluation failed"):
        policy.evaluate({"x": 0})


ENV_READERS = {
    "direct": "package policy\nallow := opa.runtime().env",
    "bracket-indirection": 'package policy\nallow := opa["runtime"]().env',
    "inside-a-function": "package policy\nimport rego.v1\nf(a) := opa.runtime() if { a }\nallow := f(true)",
    "with-replacement": "package policy\nimport rego.v1\nallow := y if { y := time.now_ns() with time.now_ns as opa.runtime }",
    "in-a-comprehension": "package policy\nallow := [e | e := opa.runtime().env[_]]",
    "unreached-rule": "package policy\nunused := opa.runtime()\nallow := true",
    "helper-style": "package policy\nimport rego.v1\nallow := x if { some x in [opa.runtime()] }",
    "http-send": 'package policy\nallow := http.send({"method": "get", "url": "http://127.0.0.1:9"})',
    "dns": 'package policy\nallow := net.lookup_ip_addr("localhost")',
}


@pytest.mark.parametrize("text", ENV_READERS.values(), ids=ENV_READERS.keys())
def test_builtins_reaching_environment_or_network_are_refused(text: str) -> None:
    with pytest.raises(InvalidPolicyError, match="disabled"):
        RegoPolicy(text)


def test_overriding_a_denied_builtin_with_a_value_is_harmless_and_allowed() -> None:
    policy = RegoPolicy('package policy\nimport rego.v1\nallow := y if { y := opa.runtime() with opa.runtime as {"env": {}} }')
    assert policy.evaluate({}) == {"allow": {"env": {}}}


def test_time_now_ns_stays_available() -> None:
    assert RegoPolicy("package policy\nallow := time.now_ns() > 0").evaluate({}) == {"allow": True}


def test_builtins_are_read_from_the_plan_list_not_the_whole_tree() -> None:
    from trustee_common.rego import used_builtins

    policy = RegoPolicy('package policy\nimport rego.v1\nallow if { startswith(input.a, "x"); time.now_ns() > 0 }')
    assert used_builtins(policy._interpreter, policy._bundle) >= {"startswith", "time.now_ns"}
    assert all(policy._interpreter.is_builtin(name) for name in used_builtins(policy._interpreter, policy._bundle))


def test_policy_engine_config_defaults_and_bounds() -> None:
    from trustee_common.config import ConfigTable
    from trustee_common.errors import ConfigError
    from trustee_common.rego import PolicyEngineConfig

    assert PolicyEngineConfig.from_table(ConfigTable({}, "policy_engine")) == PolicyEngineConfig(2.0, 2)
    table = ConfigTable({"evaluation_timeout": 0.5, "workers": 4, "max_worker_memory_mib": 512, "result_cache_entries": 0}, "pe")
    assert PolicyEngineConfig.from_table(table) == PolicyEngineConfig(0.5, 4, 512, 0)
    bad_tables = ({"evaluation_timeout": -1}, {"evaluation_timeout": True}, {"workers": 65}, {"max_worker_memory_mib": 64}, {"bogus": 1},
                  {"result_cache_entries": -1}, {"result_cache_entries": 1 << 21}, {"result_cache_entries": "many"})
    for bad in bad_tables:
        with pytest.raises(ConfigError):
            PolicyEngineConfig.from_table(ConfigTable(bad, "policy_engine"))


def test_input_cannot_override_the_per_evaluation_data() -> None:
    from trustee_common.rego import DATA_INPUT_KEY

    policy = RegoPolicy(POLICY, data_keys=DATA_KEYS)
    forged = {"repo": "one", DATA_INPUT_KEY: {"plugin": "resource", "resource-path": "one/a/b", "query": {}}}
    data = {"plugin": "resource", "resource-path": "two/a/b", "query": {}}
    assert policy.evaluate(forged, data) == {"allow": False}
