"""The resource-policy input is trimmed only where the policy text cannot tell (kbs.core.resource_policy)."""

from __future__ import annotations

from typing import Any

import pytest

from kbs.core.resource_policy import policy_input

CLAIMS: dict[str, Any] = {"exp": 1, "submods": {"cpu0": {"ear.status": "affirming", "nested": {"a": [1, 2]}}}}


def test_without_text_the_input_is_the_claims_with_the_cpu_alias() -> None:
    result = policy_input(CLAIMS)
    assert result["submods"]["cpu"] == CLAIMS["submods"]["cpu0"]
    assert "cpu" not in CLAIMS["submods"]  # the claims themselves are not changed


@pytest.mark.parametrize("text", ["package policy\ndefault allow = true\n", "package policy\nallow if { data.plugin == \"resource\" }\n"])
def test_a_policy_that_never_names_input_gets_an_empty_input(text: str) -> None:
    assert policy_input(CLAIMS, text) == {}


@pytest.mark.parametrize("text", [
    "package policy\nallow if { input.submods.cpu[\"ear.status\"] == \"affirming\" }\n",
    "package policy\nallow if { input.submods[\"cpu\"] }\n",
    "package policy\nallow if { x := \"cpu\"; input.submods[x] }\n",
])
def test_a_policy_naming_cpu_gets_the_alias(text: str) -> None:
    assert policy_input(CLAIMS, text)["submods"]["cpu"] == CLAIMS["submods"]["cpu0"]


@pytest.mark.parametrize("text", [
    "package policy\nallow if { input.submods.cpu0[\"ear.status\"] == \"affirming\" }\n",
    "package policy\nallow if { input.submods.cpus }\n",
])
def test_a_policy_not_naming_cpu_reads_the_claims_without_the_alias(text: str) -> None:
    result = policy_input(CLAIMS, text)
    assert result == CLAIMS and "cpu" not in result["submods"]
