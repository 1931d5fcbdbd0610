"""RVPS configuration (TOML, or JSON by `.json` suffix).

Upstream's file (trustee-server.md 7.5) is JSON
`{"storage": <StorageBackendConfig>, "extractors": {...}}`; it works here as
it is. Ours adds the keys below.

```toml
reference_values_path = "rv.json"   # optional: JSON array loaded (upserted) at start
max_value_bytes = 1048576           # optional: cap on one value's JSON text (default 1 MiB)
max_total_bytes = 4194304           # optional: cap on all live values (default 4 MiB, at most 6 MiB)
extractors = { swid_extractor = {} }  # optional, upstream's: accepted; sample, swid and corim are always on
[storage]                           # upstream's name for the store (StorageBackendConfig); or [storage_backend],
storage_type = "Sqlite"             # ours, the same table (not both): trustee_common.storage.StorageConfig,
                                    # "Sqlite" (default), "Memory", "Postgres", "Redis", "LocalFs", "LocalJson"
[storage.backends.sqlite]
path = "..."   # default: <config file dir>/storage.sqlite3, or ./rvps.sqlite3 without a config file
[storage.backends.postgres]
url = "postgresql://..."            # or upstream's host/port/db/username/password; env POSTGRES_URL overrides (docs/storage.md)
[tls]                               # optional: serve gRPC over TLS (docs/grpc-tls.md)
certificate = "rvps.pem"            # PEM chain, leaf first
private_key = "rvps.key"
client_ca = "ca.pem"                # optional: require client certificates from this CA (mutual TLS)
[metrics]                           # optional: Prometheus /metrics over plain HTTP (off without it)
address = "127.0.0.1:9465"          # loopback or a monitoring network: the endpoint is not authenticated
[audit]                             # optional: append-only audit log of registrations and deletions
path = "audit.jsonl"                # relative to the config file's folder (docs/audit.md)
```

Relative paths are taken as given (relative to the working directory),
except `[audit] path`, which is relative to the config file's folder.

Obsolete upstream keys are accepted, ignored, and named in one warning
line at start: `storage.type` and `storage.file_path` (the store format of
2024-12..2026-03, still in upstream's docker-compose `rvps.json`; the store
is then the default one), and the top-level `store_type`, `store_config`,
`address` (the listen address is `-a/--address`) and `read_only` of older
releases. Any other unknown key is a `ConfigError` naming it. Unlike
upstream, which silently falls back to an in-memory store when its file is
missing or invalid, a missing or invalid file here is an error at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rvps.core.extractors import check_extractors_table
from rvps.core.limits import ReferenceValueLimits
from trustee_common.addresses import parse_listen_address
from trustee_common.audit import AuditConfig, audit_config
from trustee_common.config import ConfigTable, collecting_warnings, log_warnings, parse_config_file
from trustee_common.errors import ConfigError
from trustee_common.storage import StorageConfig
from trustee_common.tls_config import ServerTls, parse_server_tls

DEFAULT_ADDRESS = "127.0.0.1:50003"
NO_CONFIG_SQLITE_PATH = Path("rvps.sqlite3")
OLD_STORE_KEYS = {
    "store_type": "the pre-2024-12 store type; use storage.storage_type",
    "store_config": "the pre-2024-12 store settings; use storage.backends",
    "address": "the listen address is the -a/--address flag",
    "read_only": "no longer an option",
}

logger = logging.getLogger("rvps")


@dataclass(frozen=True)
class RvpsConfig:
    storage: StorageConfig
    reference_values_path: Path | None = None
    #: `[tls]`: serve gRPC over TLS; None: plain text.
    tls: ServerTls | None = None
    limits: ReferenceValueLimits = field(default_factory=ReferenceValueLimits)
    #: `[metrics] address`: where `/metrics` is served; None: not served.
    metrics_address: str | None = None
    #: `[audit]`: the audit log of registrations and deletions; None: none.
    audit: AuditConfig | None = None

    @classmethod
    def load(cls, path: Path | None) -> RvpsConfig:
        """The config in the file at `path` (defaults without one)."""
        if path is None:
            return cls(StorageConfig(sqlite_path=NO_CONFIG_SQLITE_PATH))
        return parse_config_file(path, lambda data, base, source: cls.parse(data, base, source=source))

    @classmethod
    def parse(cls, data: dict[str, Any], base: Path, where: str = "config", *, source: str | None = None) -> RvpsConfig:
        """The config in `data` (a parsed file); `base` is the config file's folder, `where` names it in errors."""
        with collecting_warnings() as lines:
            root = ConfigTable(data, where)
            for key, reason in OLD_STORE_KEYS.items():
                root.deprecated(key, reason)
            key = "storage" if root.has("storage") else "storage_backend"
            storage = StorageConfig.from_table(_storage_table(root), base / "storage.sqlite3", where=key)
            values = root.string("reference_values_path")
            tls = parse_server_tls(root.table("tls"), "tls")
            limits = ReferenceValueLimits.from_table(root)
            check_extractors_table(root.table("extractors"))
            metrics = root.table("metrics")
            address = metrics.string("address")
            metrics.finish()
            audit = audit_config(root.table("audit"), base) if root.has("audit") else None
            root.finish()
        if address is not None:
            parse_listen_address(address, "metrics.address")
        log_warnings(lines, where if source is None else f"config {source}", logger)
        return cls(storage, None if values is None else Path(values), tls, limits, address, audit)


def _storage_table(root: ConfigTable) -> ConfigTable:
    """`storage` (upstream's name) or `storage_backend` (ours), with the obsolete `type`/`file_path` noted."""
    if root.has("storage") and root.has("storage_backend"):
        raise ConfigError("give the store as storage (upstream's name) or storage_backend, not both")
    table = root.table("storage" if root.has("storage") else "storage_backend")
    table.deprecated("type", "the 2024-12..2026-03 store format; use storage_type and backends")
    table.deprecated("file_path", "the 2024-12..2026-03 store format; use backends.<type>")
    return table
