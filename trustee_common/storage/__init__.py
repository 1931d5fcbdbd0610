"""Storage: one narrow key-value interface, and the resource repository.

`KeyValueStore` holds sessions, policies and reference values in
namespaces (upstream's names: `kbs`, `kbs_protocol_session`,
`attestation_service_policy`, `reference_value`, `repository`).
`ResourceStore` holds the KBS resources (a directory tree, or namespace
`repository` of a `KeyValueStore`). Protocol code depends only on these
Protocols; the backends (SQLite, memory, PostgreSQL, Redis; upstream's
LocalFs and LocalJson are SQLite in their directory) are chosen from config
by `open_kv_store` (docs/storage.md).
"""

from trustee_common.storage.base import Entry, ExportableStore, KeyValueStore, ResourceStore, validate_key
from trustee_common.storage.factory import StorageConfig, describe_sessions, open_kv_store, open_session_store

__all__ = ["Entry", "ExportableStore", "KeyValueStore", "ResourceStore", "StorageConfig", "describe_sessions", "open_kv_store",
           "open_session_store", "validate_key"]
