"""Strict configuration loading shared by every service.

Files are TOML (or JSON, by extension, for upstream's AS and RVPS files).
`ConfigTable` reads one table: each accessor checks the type and records
the key, and `finish()` rejects every key nobody asked for, naming it.

Keys an upstream file may hold but that we do not use (or only map onto
ours) are read with `ConfigTable.deprecated(key, reason)`: it accepts any
value, returns it (None when absent) and records one warning
`"<table>.<key>: <reason>"`. A parser wraps its run in
`collecting_warnings()` to get those lines (and logs them once, at start);
outside one, each is logged at once on this module's logger.
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The lists of the `collecting_warnings()` blocks in progress (innermost last).
_collectors: list[list[str]] = []


@contextmanager
def collecting_warnings() -> Iterator[list[str]]:
    """Collect the `ConfigTable.deprecated` / `config_warning` lines of the block into the yielded list."""
    found: list[str] = []
    _collectors.append(found)
    try:
        yield found
    finally:
        _collectors.remove(found)


def log_warnings(lines: list[str], what: str, log: logging.Logger) -> None:
    """One warning line for the `collecting_warnings` lines of a parse (nothing when there is none)."""
    if lines:
        log.warning("%s: accepted with differences from upstream: %s", what, "; ".join(lines))


def config_warning(text: str) -> None:
    """Record one warning about the config being parsed (see `collecting_warnings`)."""
    if _collectors:
        _collectors[-1].append(text)
    else:
        logger.warning("%s", text)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON (by `.json` suffix) file into a dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table")
    return data


def parse_config_file(path: Path, parse: Callable[[dict[str, Any], Path, str], T]) -> T:
    """`parse(data, folder, path)` of the file at `path`; its `ConfigError`s are prefixed with `config <path>: ` once."""
    data = load_config_file(path)
    try:
        return parse(data, path.parent, str(path))
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc.detail}") from None


class ConfigTable:
    """Typed, strict access to one config table; `where` names it in errors."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a table")
        self._data: dict[str, Any] = data
        self._where = where
        self._seen: set[str] = set()

    @property
    def where(self) -> str:
        """The dotted name of this table (e.g. `config.image.registry_config`), for messages."""
        return self._where

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self._seen.add(key)
        if key not in self._data:
            return default
        value = self._data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and (int in kinds or float in kinds):
            raise ConfigError(f"{self._where}.{key} must be a number, not a boolean")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self._where}.{key} must be {names}, got {type(value).__name__}")
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value: str | None = self._get(key, str, default)
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise ConfigError(f"{self._where}.{key} is required")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, bool, default)
        return value

    def integer(self, key: str, default: int, *, minimum: int | None = None) -> int:
        value: int = self._get(key, int, default)
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._where}.{key} must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, *, minimum_exclusive: float) -> float:
        value = self._get(key, (int, float), default)
        if not value > minimum_exclusive:
            raise ConfigError(f"{self._where}.{key} must be > {minimum_exclusive}, got {value}")
        return float(value)

    def strings(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self._get(key, list, default if default is not None else [])
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._where}.{key} must be a list of strings")
        return list(value)

    def table(self, key: str) -> ConfigTable:
        """A sub-table (an empty one when absent)."""
        return ConfigTable(self._get(key, dict, {}), f"{self._where}.{key}")

    def tables(self, key: str) -> list[ConfigTable]:
        """An array of tables (`[[key]]`)."""
        value = self._get(key, list, [])
        return [ConfigTable(v, f"{self._where}.{key}[{i}]") for i, v in enumerate(value)]

    def deprecated(self, key: str, reason: str) -> Any:
        """Accept `key` whatever its value, with one warning naming it and `reason`; its value, None when absent."""
        self._seen.add(key)
        if key not in self._data:
            return None
        config_warning(f"{self._where}.{key}: {reason}")
        return self._data[key]

    def raw(self, key: str) -> Any:
        """The value of `key` whatever its type (None when absent), for keys whose type selects a form; not marked read."""
        return self._data.get(key)

    def has(self, key: str) -> bool:
        return key in self._data

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"unknown key(s) in {self._where}: {', '.join(unknown)}")
