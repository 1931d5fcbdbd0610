"""A `ConfigTable` that also accepts keys upstream has made obsolete, with one warning for all of them.

Upstream Trustee ignores every key it does not know, so configs written for
older releases still start there; ours refuse unknown keys. `CompatTable`
lets a parser name the obsolete keys it accepts (`deprecated(key, reason)`),
and `warn_deprecated` logs them on ONE line after parsing; any other unknown
key is still a `ConfigError`.

Interim: the same method is planned on `trustee_common.config.ConfigTable`
(`ConfigTable.deprecated(key, reason)`); this module goes away when it lands.
"""

from __future__ import annotations

import logging

from trustee_common.config import ConfigTable


class CompatTable(ConfigTable):
    """`ConfigTable` plus `deprecated`; its sub-tables share one list of notes."""

    def __init__(self, data: object, where: str, notes: list[str] | None = None, path: str = "") -> None:
        super().__init__(data, where)
        self.notes: list[str] = [] if notes is None else notes
        #: The dotted key path from the root table ("" for the root), used in the notes.
        self.path = path

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def deprecated(self, key: str, reason: str) -> bool:
        """Accept `key` (any value) and note it with `reason`; True when it is present."""
        if key not in self._data:
            return False
        self._seen.add(key)
        self.notes.append(f"{self._child(key)} ({reason})")
        return True

    def table(self, key: str) -> CompatTable:
        plain = super().table(key)
        return CompatTable(plain._data, plain._where, self.notes, self._child(key))

    def tables(self, key: str) -> list[ConfigTable]:
        return [CompatTable(t._data, t._where, self.notes, f"{self._child(key)}[{i}]") for i, t in enumerate(super().tables(key))]

    def raw(self, key: str) -> object:
        """The value of `key` whatever its type (None when absent); the key counts as read."""
        self._seen.add(key)
        return self._data.get(key)


def warn_deprecated(notes: list[str], logger: logging.Logger) -> None:
    """One warning line naming every obsolete key accepted (nothing when there is none)."""
    if notes:
        logger.warning("obsolete upstream config key(s) accepted and ignored: %s", "; ".join(notes))
