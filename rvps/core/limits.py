"""Size caps on reference values, so that every reply carrying them fits one gRPC message.

Two caps, both in bytes, configurable (`max_value_bytes`,
`max_total_bytes` in the RVPS config and in the AS's BuiltIn
`[rvps_config]`):

- one value: the size of its compact JSON text (what `Query` returns);
- all live values together: the sum of `record_size` (name + value JSON +
  `RECORD_OVERHEAD_BYTES` for the expiration and the protobuf framing),
  which bounds the `ListReferenceValues` reply.

`MAX_TOTAL_CEILING` keeps the total well inside the 8 MiB gRPC message limit
of every hop (`trustee_common.serving.MAX_MESSAGE_BYTES`; a test checks the
relation). A registration that would cross a cap is refused as a whole
with `InvalidReferenceValueError` (INVALID_ARGUMENT; 400 at the KBS) naming
the cap and its config key; nothing is stored. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rvps.core.record import ReferenceValue, value_json
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, InvalidReferenceValueError

MIB = 1024 * 1024
DEFAULT_MAX_VALUE_BYTES = 1 * MIB
DEFAULT_MAX_TOTAL_BYTES = 4 * MIB
MAX_TOTAL_CEILING = 6 * MIB
#: Expiration text (20 bytes) plus field tags and length prefixes, rounded up.
RECORD_OVERHEAD_BYTES = 64


def value_size(record: ReferenceValue) -> int:
    return len(value_json(record.value).encode())


def record_size(record: ReferenceValue) -> int:
    return len(record.name.encode()) + value_size(record) + RECORD_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class ReferenceValueLimits:
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES

    @classmethod
    def from_table(cls, table: ConfigTable, prefix: str = "") -> ReferenceValueLimits:
        """`max_value_bytes` and `max_total_bytes` of `table`; `prefix` names the table in errors."""
        total = table.integer("max_total_bytes", DEFAULT_MAX_TOTAL_BYTES, minimum=1)
        if total > MAX_TOTAL_CEILING:
            raise ConfigError(
                f"{prefix}max_total_bytes must be at most {MAX_TOTAL_CEILING} (the gRPC message limit less room), got {total}"
            )
        value = table.integer("max_value_bytes", min(DEFAULT_MAX_VALUE_BYTES, total), minimum=1)
        if value > total:
            raise ConfigError(f"{prefix}max_value_bytes ({value}) must not exceed {prefix}max_total_bytes ({total})")
        return cls(max_value_bytes=value, max_total_bytes=total)

    def check(self, incoming: Iterable[ReferenceValue], kept: Iterable[ReferenceValue]) -> None:
        """Refuse `incoming` if one value, or `incoming` plus the `kept` live records, crosses a cap."""
        total = 0
        for record in incoming:
            size = value_size(record)
            if size > self.max_value_bytes:
                raise InvalidReferenceValueError(
                    f"reference value {record.name!r} is {size} bytes of JSON, above the cap of {self.max_value_bytes} "
                    "bytes per value (max_value_bytes)"
                )
            total += record_size(record)
        total += sum(record_size(record) for record in kept)
        if total > self.max_total_bytes:
            raise InvalidReferenceValueError(
                f"registration refused: the reference values would total {total} bytes, above the cap of "
                f"{self.max_total_bytes} bytes (max_total_bytes); delete values or raise the cap"
            )
