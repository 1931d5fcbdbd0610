"""Attestation Service configuration (TOML, or JSON by `.json` suffix).

Upstream's key names (trustee-server.md 6.3); unknown keys are a
`ConfigError` naming them. `[rvps_config]`, `[attestation_token_broker]`
and `[verifier_config]` are also what the KBS reads under its
`[attestation_service]` of `type = "coco_as_builtin"` (the AS embedded in
the KBS; docs/kbs-config.md), through `AsConfig.service_sections`.

```toml
appraisal_cache_ttl_seconds = 1.0  # top level, before any table (ours): re-read the appraisal epoch at most
                                   # this often; reuse cached policies and reference values while it is unchanged
                                   # (0 = no caching, at most 60; docs/token-freshness.md)
workers = 2                        # top level (ours): AS processes sharing the port (default: the available
                                   # cores; --workers and $TRUSTEE_WORKERS override; docs/scale-out.md)
[storage_backend]          # policies (and BuiltIn reference values)
storage_type = "Sqlite"    # default path: <config dir>/storage.sqlite3,
                           # or ./attestation-service.sqlite3 without a config file;
                           # or "Postgres" with [storage_backend.backends.postgres] url
                           # (env POSTGRES_URL overrides); "Redis" is refused (docs/storage.md)
[rvps_config]
type = "GrpcRemote"        # or "BuiltIn" (default): reference values in this service's storage
address = "127.0.0.1:50003"   # GrpcRemote only; "http://" prefix optional, "https://" for TLS
ca_certificate = "ca.pem"     # https:// only, optional: CA of the RVPS's certificate (default: system roots)
certificate = "as-client.pem" # https:// only, optional (with private_key): client certificate for mutual TLS
private_key = "as-client.key"
max_value_bytes = 1048576  # BuiltIn only: cap on one value's JSON (default 1 MiB; GrpcRemote: the RVPS's config)
max_total_bytes = 4194304  # BuiltIn only: cap on all live values (default 4 MiB, at most 6 MiB)
extractors = { swid_extractor = {} }  # BuiltIn only, optional (upstream's): sample, swid and corim are always on
[tls]                      # optional: serve gRPC over TLS (docs/grpc-tls.md)
certificate = "as.pem"     # PEM chain, leaf first
private_key = "as.key"
client_ca = "ca.pem"       # optional: require client certificates from this CA (mutual TLS)
[attestation_token_broker]
type = "Ear"               # optional; only "Ear" exists
duration_min = 5
issuer_name = "CoCo-Attestation-Service"
developer_name = "https://confidentialcontainers.org"
build_name = "attestation-service 0.1.0"
profile_name = "tag:github.com,2024:confidential-containers/Trustee"
verbose_token = true       # false drops runtime_data_claims."additional-evidence"
[attestation_token_broker.signer]   # optional: without it an ephemeral key, no x5c
key_path = "token.key"     # EC P-256 PEM
cert_path = "token-cert-chain.pem"  # optional, leaf first
cert_url = "https://..."   # optional, becomes x5u
[verifier_config.dcap_verifier]     # optional: the `tdx` verifier (without it every TDX quote is refused)
collateral_dir = "dcap-collateral"  # QuoteCollateralV3 JSON file or directory (relative to the config file)
collateral_service = "https://api.trustedservices.intel.com"  # optional PCS/PCCS (v4 API)
timeout = 10                        # seconds, for collateral_service
accept_expired_collateral = false   # true: report collateral_expiration_status "1" instead of rejecting
verification_time = "2025-07-01T00:00:00Z"  # TEST ONLY: pin the DCAP clock
[verifier_config.tpm_verifier]      # optional AK anchors for `tpm`; with none, only AKs in the reference value `trusted_aks` verify
trusted_aks = ["ak.pem"]            # AK public keys (PEM or DER SPKI files, or certificates) trusted outright
ak_ca_certs = ["ak-ca.pem"]         # AK/EK CA certificates (PEM, may hold several) an evidence ak_cert_chain must reach
[verifier_config.snp_verifier]      # optional: where `snp` finds VCEKs the evidence lacks (without it: evidence only)
vcek_sources = [                    # tried in order
  { type = "OfflineStore", path = "kds-store" },  # AMD KDS layout: vcek/v1/<Product>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
  { type = "KDS", base_url = "https://kdsintf.amd.com", timeout = 10 },  # fetched VCEKs cached in the AS store
]
verification_time = "2025-01-01T00:00:00Z"  # TEST ONLY: pin the SNP clock
[policy_engine]                     # optional (ours): attestation-policy evaluation
evaluation_timeout = 2.0            # seconds per compile or evaluation; over it: PolicyEngineUnavailable (UNAVAILABLE)
workers = 2                         # policy worker processes (each evaluates one policy at a time)
max_worker_memory_mib = 1024        # resident memory per worker; over it: killed, PolicyEngineUnavailable
[metrics]                           # optional: Prometheus /metrics over plain HTTP (off without it)
address = "127.0.0.1:9464"          # loopback or a monitoring network: the endpoint is not authenticated
[audit]                             # optional: append-only audit log of policy (and BuiltIn reference value) writes
path = "audit.jsonl"                # relative to the config file; fsync = "interval" | "always" | "never" (docs/audit.md)
```
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from attestation_service.appraisal_cache import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
from attestation_service.core.token import TokenSettings
from rvps.core.extractors import check_extractors_table
from rvps.core.limits import ReferenceValueLimits
from trustee_common.addresses import grpc_endpoint, parse_listen_address
from trustee_common.audit import AuditConfig, audit_config
from trustee_common.config import ConfigTable, load_config_file
from trustee_common.errors import ConfigError
from trustee_common.rego import PolicyEngineConfig
from trustee_common.storage import StorageConfig
from trustee_common.tls_config import ClientTls, ServerTls, parse_client_tls, parse_server_tls
from trustee_common.workers import check_count

DEFAULT_SOCKET = "127.0.0.1:50004"
DEFAULT_RVPS_ADDRESS = "127.0.0.1:50003"
NO_CONFIG_SQLITE_PATH = Path("attestation-service.sqlite3")
RVPS_TYPES = ("BuiltIn", "GrpcRemote")


@dataclass(frozen=True)
class RvpsSettings:
    kind: str = "BuiltIn"
    address: str = DEFAULT_RVPS_ADDRESS
    #: GrpcRemote over https://: how to verify the RVPS and the client certificate to show it.
    tls: ClientTls | None = None
    #: Size caps of the BuiltIn provider (a GrpcRemote RVPS has its own).
    limits: ReferenceValueLimits = field(default_factory=ReferenceValueLimits)


@dataclass(frozen=True)
class SignerFiles:
    key_path: Path
    cert_path: Path | None = None
    cert_url: str | None = None


@dataclass(frozen=True)
class DcapSettings:
    collateral_dir: Path | None = None
    collateral_service: str | None = None
    timeout: int = 10
    accept_expired_collateral: bool = False
    #: Test-only: DCAP checks use this time instead of the clock (never reachable by clients).
    verification_time: datetime.datetime | None = None


@dataclass(frozen=True)
class TpmSettings:
    """`[verifier_config.tpm_verifier]`: files, resolved against the config file's folder."""

    trusted_aks: tuple[Path, ...] = ()
    ak_ca_certs: tuple[Path, ...] = ()


VCEK_SOURCE_TYPES = ("OfflineStore", "KDS")
DEFAULT_KDS_URL = "https://kdsintf.amd.com"


@dataclass(frozen=True)
class SnpSettings:
    #: Offline stores laid out like AMD KDS (`vcek/v1/<Product>/<hwid>?...`, optional `.../crl`), in order.
    offline_stores: tuple[Path, ...] = ()
    #: AMD KDS (or a mirror) to fetch missing VCEKs from; None: never fetch.
    kds_url: str | None = None
    kds_timeout: int = 10
    #: Test-only: SNP checks use this time instead of the clock (never reachable by clients).
    verification_time: datetime.datetime | None = None


@dataclass(frozen=True)
class AsConfig:
    storage: StorageConfig
    rvps: RvpsSettings
    token: TokenSettings
    signer: SignerFiles | None = None
    verbose_token: bool = True
    dcap: DcapSettings | None = None
    tpm: TpmSettings | None = None
    snp: SnpSettings | None = None
    #: `[tls]`: serve gRPC over TLS; None: plain text.
    tls: ServerTls | None = None
    policy_engine: PolicyEngineConfig = field(default_factory=PolicyEngineConfig)
    #: `[metrics] address`: where `/metrics` is served; None: not served.
    metrics_address: str | None = None
    #: `[audit]`: the audit log of policy writes; None: none.
    audit: AuditConfig | None = None
    #: `appraisal_cache_ttl_seconds`: how long a confirmed appraisal epoch (and what was read under it) is reused.
    appraisal_cache_ttl_seconds: float = DEFAULT_TTL_SECONDS
    #: `workers`: processes sharing the port (`trustee_common.workers`); None: not set.
    workers: int | None = None

    @classmethod
    def load(cls, path: Path | None) -> AsConfig:
        if path is None:
            return cls(StorageConfig(sqlite_path=NO_CONFIG_SQLITE_PATH), RvpsSettings(), TokenSettings())
        root = ConfigTable(load_config_file(path), f"config {path}")
        storage = StorageConfig.from_table(root.table("storage_backend"), path.parent / "storage.sqlite3")
        service = cls.service_sections(root, path.parent, storage)
        tls = parse_server_tls(root.table("tls"), "tls")
        engine = PolicyEngineConfig.from_table(root.table("policy_engine"))
        metrics = metrics_address(root)
        audit = audit_config(root.table("audit"), path.parent) if root.has("audit") else None
        cache_ttl = _cache_ttl(root)
        workers = check_count(root.integer("workers", 1), "workers") if root.has("workers") else None
        root.finish()
        return replace(service, tls=tls, policy_engine=engine, metrics_address=metrics, audit=audit,
                       appraisal_cache_ttl_seconds=cache_ttl, workers=workers)

    @classmethod
    def service_sections(cls, root: ConfigTable, base: Path, storage: StorageConfig) -> AsConfig:
        """`rvps_config`, `attestation_token_broker` and `verifier_config` of `root` (paths relative to `base`), over `storage`.

        Shared by this service's own file and the KBS's `[attestation_service]` table of
        `type = "coco_as_builtin"` (the AS embedded in the KBS), which reads these sections
        from its own table; the caller reads its other keys and calls `root.finish()`.
        """
        rvps = _rvps(root.table("rvps_config"))
        token, signer, verbose = _broker(root.table("attestation_token_broker"))
        dcap, tpm, snp = None, None, None
        if root.has("verifier_config"):
            verifier_table = root.table("verifier_config")
            tpm = _tpm_verifier(verifier_table, base)
            snp = _snp_verifier(verifier_table, base)
            dcap = _verifier_config(verifier_table, base)
        return cls(storage, rvps, token, signer, verbose, dcap, tpm, snp)


def _cache_ttl(root: ConfigTable) -> float:
    ttl = root.number("appraisal_cache_ttl_seconds", DEFAULT_TTL_SECONDS, minimum_exclusive=-math.inf)
    if not 0.0 <= ttl <= MAX_TTL_SECONDS:
        raise ConfigError(f"appraisal_cache_ttl_seconds must be 0..{MAX_TTL_SECONDS:g} seconds, got {ttl:g}")
    return ttl


def metrics_address(root: ConfigTable) -> str | None:
    """`[metrics] address` (`host:port`), checked; None when absent."""
    table = root.table("metrics")
    address = table.string("address")
    table.finish()
    if address is not None:
        parse_listen_address(address, "metrics.address")
    return address


def _rvps(table: ConfigTable) -> RvpsSettings:
    kind = table.string("type", "BuiltIn") or "BuiltIn"
    if kind not in RVPS_TYPES:
        raise ConfigError(f"rvps_config.type {kind!r} is not one of {', '.join(RVPS_TYPES)}")
    address = DEFAULT_RVPS_ADDRESS
    tls = None
    limits = ReferenceValueLimits()
    if kind == "GrpcRemote":
        address = table.string("address", DEFAULT_RVPS_ADDRESS) or DEFAULT_RVPS_ADDRESS
        endpoint = grpc_endpoint(address, "rvps_config.address")
        tls = parse_client_tls(table, "rvps_config", tls=endpoint.tls)
        for key in ("max_value_bytes", "max_total_bytes"):
            if table.has(key):
                raise ConfigError(f"rvps_config.{key} applies to type = \"BuiltIn\" only; a GrpcRemote RVPS takes it in its own config")
    else:
        limits = ReferenceValueLimits.from_table(table, "rvps_config.")
        check_extractors_table(table.table("extractors"))
    table.finish()
    return RvpsSettings(kind, address, tls, limits)


def _verifier_config(table: ConfigTable, base: Path) -> DcapSettings | None:
    dcap = None
    if table.has("dcap_verifier"):
        sub = table.table("dcap_verifier")
        directory = sub.string("collateral_dir")
        service = sub.string("collateral_service")
        if service is not None and not service.startswith(("https://", "http://")):
            raise ConfigError("verifier_config.dcap_verifier.collateral_service must be an http(s):// URL")
        pinned = sub.string("verification_time")
        dcap = DcapSettings(
            collateral_dir=None if directory is None else base / directory,
            collateral_service=service,
            timeout=sub.integer("timeout", 10, minimum=1),
            accept_expired_collateral=sub.boolean("accept_expired_collateral", False),
            verification_time=None if pinned is None else _rfc3339(pinned, "verifier_config.dcap_verifier.verification_time"),
        )
        sub.finish()
    table.finish()
    return dcap


def _snp_verifier(verifier_config: ConfigTable, base: Path) -> SnpSettings | None:
    """`[verifier_config.snp_verifier]` (read before `_verifier_config`, which finishes the table)."""
    if not verifier_config.has("snp_verifier"):
        return None
    table = verifier_config.table("snp_verifier")
    stores: list[Path] = []
    kds_url, timeout = None, 10
    for source in table.tables("vcek_sources"):
        kind = source.required_string("type")
        if kind not in VCEK_SOURCE_TYPES:
            raise ConfigError(f"verifier_config.snp_verifier.vcek_sources type {kind!r} is not one of {', '.join(VCEK_SOURCE_TYPES)}")
        if kind == "OfflineStore":
            stores.append(base / source.required_string("path"))
        else:
            if kds_url is not None:
                raise ConfigError("verifier_config.snp_verifier.vcek_sources: only one KDS source is allowed")
            kds_url = source.string("base_url", DEFAULT_KDS_URL) or DEFAULT_KDS_URL
            if not kds_url.startswith(("https://", "http://")):
                raise ConfigError("verifier_config.snp_verifier.vcek_sources base_url must be an http(s):// URL")
            timeout = source.integer("timeout", 10, minimum=1)
        source.finish()
    pinned = table.string("verification_time")
    table.finish()
    return SnpSettings(
        offline_stores=tuple(stores),
        kds_url=kds_url,
        kds_timeout=timeout,
        verification_time=None if pinned is None else _rfc3339(pinned, "verifier_config.snp_verifier.verification_time"),
    )


def _tpm_verifier(table: ConfigTable, base: Path) -> TpmSettings | None:
    """`[verifier_config.tpm_verifier]` (read before `_verifier_config`, which finishes the table)."""
    if not table.has("tpm_verifier"):
        return None
    sub = table.table("tpm_verifier")
    settings = TpmSettings(
        trusted_aks=tuple(base / p for p in sub.strings("trusted_aks", [])),
        ak_ca_certs=tuple(base / p for p in sub.strings("ak_ca_certs", [])),
    )
    sub.finish()
    return settings


def _rfc3339(text: str, where: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise ConfigError(f"{where}: {text!r} has no time zone")
    return value.astimezone(datetime.UTC)


def _broker(table: ConfigTable) -> tuple[TokenSettings, SignerFiles | None, bool]:
    kind = table.string("type", "Ear")
    if kind != "Ear":
        raise ConfigError(f"attestation_token_broker.type {kind!r} is not supported (only \"Ear\")")
    defaults = TokenSettings()
    token = TokenSettings(
        duration_min=table.integer("duration_min", defaults.duration_min, minimum=1),
        issuer_name=_non_empty(table, "issuer_name", defaults.issuer_name),
        developer_name=_non_empty(table, "developer_name", defaults.developer_name),
        build_name=_non_empty(table, "build_name", defaults.build_name),
        profile_name=_non_empty(table, "profile_name", defaults.profile_name),
    )
    verbose = table.boolean("verbose_token", True)
    signer = None
    if table.has("signer"):
        signer_table = table.table("signer")
        key = Path(signer_table.required_string("key_path"))
        cert = signer_table.string("cert_path")
        signer = SignerFiles(key, None if cert is None else Path(cert), signer_table.string("cert_url"))
        signer_table.finish()
    table.finish()
    return token, signer, verbose


def _non_empty(table: ConfigTable, key: str, default: str) -> str:
    value = table.string(key, default) or ""
    if not value:
        raise ConfigError(f"attestation_token_broker.{key} must not be empty")
    return value
