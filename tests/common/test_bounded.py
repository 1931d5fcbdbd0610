"""Bounded JSON/TOML parsing: depth, size and non-finite numbers are refused as a `TrusteeError`."""

from __future__ import annotations

import pytest

from trustee_common.bounded import DEFAULT_MAX_DEPTH, json_depth, loads_json, loads_toml, value_depth
from trustee_common.errors import ConfigError, MalformedRequestError

DEEP = 100_000


@pytest.mark.parametrize("text", ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP, "[" * DEEP])
def test_deep_json_is_refused_without_recursion(text: str) -> None:
    with pytest.raises(MalformedRequestError, match="nested deeper"):
        loads_json(text, "body")


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", '{"a": -Infinity}', "[1e400]", "[-1e999]"])
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(MalformedRequestError, match="not JSON"):
        loads_json(text, "body")


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"a": "[[[[{{{{\\"[[["}'
    assert json_depth(text) == 1
    assert loads_json(text, "body") == {"a": '[[[[{{{{"[[['}


def test_depth_at_the_limit_parses() -> None:
    depth = DEFAULT_MAX_DEPTH
    assert loads_json("[" * depth + "]" * depth, "body") is not None
    with pytest.raises(MalformedRequestError):
        loads_json("[" * (depth + 1) + "]" * (depth + 1), "body")


def test_size_and_encoding() -> None:
    with pytest.raises(MalformedRequestError, match="larger than 10 bytes"):
        loads_json(b"[" + b"1," * 10 + b"1]", "body", max_bytes=10)
    with pytest.raises(ConfigError, match="not UTF-8"):
        loads_json(b"\xff", "body", error=ConfigError)


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * DEEP + "]" * DEEP,
        "a = " + "{b = " * 5000 + "1" + "}" * 5000,
        "x." * 1000 + "y = 1",
        "[" + "t." * 200 + "u]\nv = 1",
    ],
)
def test_deep_toml_is_refused(text: str) -> None:
    with pytest.raises(MalformedRequestError, match="nested deeper"):
        loads_toml(text, "init_data_toml")


def test_value_depth() -> None:
    assert value_depth(1) == 0
    assert value_depth({"a": [1, {"b": []}]}) == 4
    assert loads_toml('version = "0.1.0"\n[data]\nk = "v"\n', "t") == {"version": "0.1.0", "data": {"k": "v"}}
