"""Init-data TOML: validation and digest (guest-components.md 7).

The digest is `algorithm(raw TOML bytes)`, exactly as delivered (no
re-encoding), with `algorithm` read from the TOML itself. The AA sends the
TOML text to the KBS as `init-data`; binding the digest to the platform is
the attester's job. This module reads no files.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustee_common.bounded import loads_toml
from trustee_common.canonical import HashAlgorithm
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError

INIT_DATA_VERSION = "0.1.0"


@dataclass(frozen=True)
class InitData:
    toml: str
    algorithm: HashAlgorithm
    digest: bytes


def parse_init_data(raw: bytes, where: str) -> InitData:
    """Check the init-data document and compute its digest; raises `ConfigError`."""
    try:
        document = loads_toml(raw, "document", error=ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"{where}: not a UTF-8 TOML document ({exc.detail})") from None
    text = raw.decode("utf-8")
    table = ConfigTable(document, where)
    version = table.required_string("version")
    name = table.required_string("algorithm")
    table.table("data")
    table.finish()
    if not all(isinstance(value, str) for value in document.get("data", {}).values()):
        raise ConfigError(f"{where}: every [data] entry must be a string")
    if version != INIT_DATA_VERSION:
        raise ConfigError(f"{where}: unsupported init-data version {version!r} (expected {INIT_DATA_VERSION})")
    if name.lower() not in {a.value for a in HashAlgorithm}:
        raise ConfigError(f"{where}: unsupported algorithm {name!r} (sha256, sha384 or sha512)")
    algorithm = HashAlgorithm.parse(name)
    return InitData(text, algorithm, algorithm.digest(raw))
