"""RVPS configuration (TOML, or JSON by `.json` suffix).

```toml
reference_values_path = "rv.json"   # optional: JSON array loaded (upserted) at start
max_value_bytes = 1048576           # optional: cap on one value's JSON text (default 1 MiB)
max_total_bytes = 4194304           # optional: cap on all live values (default 4 MiB, at most 6 MiB)
extractors = { swid_extractor = {} }  # optional, upstream's: accepted; sample, swid and corim are always on
[storage_backend]                   # trustee_common.storage.StorageConfig
storage_type = "Sqlite"             # or "Memory", "Postgres" (not "Redis": sessions only)
[storage_backend.backends.sqlite]
path = "..."   # default: <config file dir>/storage.sqlite3, or ./rvps.sqlite3 without a config file
[storage_backend.backends.postgres]
url = "postgresql://..."            # env POSTGRES_URL overrides; pool_size = 10 (docs/storage.md)
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
Unknown keys are a `ConfigError` naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rvps.core.extractors import check_extractors_table
from rvps.core.limits import ReferenceValueLimits
from trustee_common.addresses import parse_listen_address
from trustee_common.audit import AuditConfig, audit_config
from trustee_common.config import ConfigTable, load_config_file
from trustee_common.storage import StorageConfig
from trustee_common.tls_config import ServerTls, parse_server_tls

DEFAULT_ADDRESS = "127.0.0.1:50003"
NO_CONFIG_SQLITE_PATH = Path("rvps.sqlite3")


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
        if path is None:
            return cls(StorageConfig(sqlite_path=NO_CONFIG_SQLITE_PATH))
        root = ConfigTable(load_config_file(path), f"config {path}")
        storage = StorageConfig.from_table(root.table("storage_backend"), path.parent / "storage.sqlite3")
        values = root.string("reference_values_path")
        tls = parse_server_tls(root.table("tls"), "tls")
        limits = ReferenceValueLimits.from_table(root)
        check_extractors_table(root.table("extractors"))
        metrics = root.table("metrics")
        address = metrics.string("address")
        metrics.finish()
        audit = audit_config(root.table("audit"), path.parent) if root.has("audit") else None
        root.finish()
        if address is not None:
            parse_listen_address(address, "metrics.address")
        return cls(storage, None if values is None else Path(values), tls, limits, address, audit)
