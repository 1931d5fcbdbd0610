"""Storage: one narrow key-value interface, and the resource repository.

`KeyValueStore` holds sessions, policies and reference values in
namespaces (upstream's names: `kbs`, `kbs_protocol_session`,
`attestation_service_policy`, `reference_value`). `ResourceStore` holds
the KBS resources. Protocol code depends only on these Protocols; the
backends are chosen from config by `open_kv_store`.
"""

from trustee_common.storage.base import KeyValueStore, ResourceStore, validate_key
from trustee_common.storage.factory import StorageConfig, open_kv_store

__all__ = ["KeyValueStore", "ResourceStore", "StorageConfig", "open_kv_store", "validate_key"]
