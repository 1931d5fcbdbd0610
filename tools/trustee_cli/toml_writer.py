"""A minimal TOML writer for the config files `trustee` generates.

Pure: a nested dict in, TOML text out. Supported values are strings,
booleans, integers, lists of those, lists of flat dicts (written as inline
tables) and dicts (written as `[tables]`). Nothing else is needed for the
generated configs, and anything else raises `TypeError` (a programming
error, not user input). It does not read TOML: `tomllib` does that.
"""

from __future__ import annotations

import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(document: dict[str, Any]) -> str:
    """The TOML text of `document` (plain keys first, then one `[table]` per nested dict)."""
    lines: list[str] = []
    _table(document, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (plain or not nested):
        lines.append("")
        lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
    lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in plain.items())
    for key, sub in nested.items():
        _table(sub, [*path, key], lines)
