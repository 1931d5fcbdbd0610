"""ConfigTable: typed access, and every unknown key refused by name."""

from pathlib import Path

import pytest

from trustee_common.config import ConfigTable, collecting_warnings, load_config_file
from trustee_common.errors import ConfigError


def test_typed_access_and_defaults() -> None:
    table = ConfigTable({"a": "x", "n": 3, "flag": True, "items": ["p"], "sub": {"k": "v"}}, "svc")
    assert table.string("a") == "x"
    assert table.integer("n", 1) == 3
    assert table.boolean("flag", False) is True
    assert table.strings("items") == ["p"]
    assert table.integer("missing", 7) == 7
    sub = table.table("sub")
    assert sub.string("k") == "v"
    sub.finish()
    table.finish()


def test_unknown_keys_are_named() -> None:
    table = ConfigTable({"known": 1, "typo_key": 2}, "http_server")
    table.integer("known", 0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in http_server: typo_key"):
        table.finish()


@pytest.mark.parametrize(("value", "message"), [("3", "must be int"), (True, "not a boolean"), (-1, ">= 0")])
def test_wrong_types_are_named(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConfigTable({"n": value}, "t").integer("n", 0, minimum=0)


def test_files_are_parsed_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('a = "x"\n')
    (tmp_path / "c.json").write_text('{"a": "y"}')
    assert load_config_file(tmp_path / "c.toml") == {"a": "x"}
    assert load_config_file(tmp_path / "c.json") == {"a": "y"}
    (tmp_path / "bad.toml").write_text("a = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "none.toml")


def test_deprecated_key_is_accepted_with_one_collected_warning() -> None:
    with collecting_warnings() as warnings:
        table = ConfigTable({"old": 3, "kept": "x"}, "svc")
        assert table.deprecated("old", "ignored") == 3
        assert table.deprecated("absent", "never said") is None
        assert table.string("kept") == "x"
        table.finish()
    assert warnings == ["svc.old: ignored"]
    with collecting_warnings() as again:
        pass
    assert again == []
