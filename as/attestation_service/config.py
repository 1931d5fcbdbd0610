"""Attestation Service configuration (TOML, or JSON by `.json` suffix).

Upstream's key names (trustee-server.md 6.3): upstream's JSON files start
as they are (only paths and ports to change). Unknown keys are a
`ConfigError` naming them, except the obsolete keys of older upstream
releases, which are accepted, ignored and named in ONE warning line at
start: top-level `work_dir`, `rvps_store_type`, `attestation_token_config`
and the string form of `policy_engine` ("opa"); `attestation_token_broker.policy_dir`;
`rvps_config.storage` (the 2024-12..2026-03 `{type = "LocalFs"}` form),
`store_type`, `store_config`, `read_only` and an empty `remote_addr` (a
non-empty one is refused: use type = "GrpcRemote" + address);
`verifier_config.dcap_verifier.use_secure_cert` (unused upstream too).
Refused like upstream refuses them: `attestation_token_broker` as a string;
and `attestation_token_broker.type = "Simple"` (that token was removed
upstream in 2025-10; upstream now ignores `type`, we refuse rather than
issue EAR tokens to a deployment expecting Simple ones).

Parse entry points: `AsConfig.load(path)`, `AsConfig.parse(dict, base_dir)`,
and `parse_sections(table, storage, base_dir)` for a KBS embedding the AS
(`storage_type`, `rvps_config`, `attestation_token_broker`, `verifier_config`).

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
                           # (env POSTGRES_URL overrides); "Redis", upstream's "LocalFs"/"LocalJson" (docs/storage.md)
[rvps_config]
type = "GrpcRemote"        # or "BuiltIn" (default): reference values in this service's storage
storage_type = "Memory"    # BuiltIn only, optional (upstream's): the reference values' store type, with the
                           # backends of [storage_backend] (default: the same store as the policies)
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
collateral_service = "https://api.trustedservices.intel.com"  # optional PCS/PCCS (v4 API; only scheme, host and
                                    # port are used, like upstream); or "file:///abs/collateral.json", the same as
                                    # collateral_dir (QuoteCollateralV3 JSON; Intel PCS Client Tool files are refused)
tcb_update_type = "early"           # or "standard": the TCB Info / QE identity asked of collateral_service (update=)
timeout = 10                        # seconds, for collateral_service
accept_expired_collateral = false   # true: report collateral_expiration_status "1" instead of rejecting
verification_time = "2025-07-01T00:00:00Z"  # TEST ONLY: pin the DCAP clock
[verifier_config.tpm_verifier]      # optional AK anchors for `tpm`; with none, only AKs in the reference value `trusted_aks` verify
trusted_aks = ["ak.pem"]            # AK public keys (PEM or DER SPKI files, or certificates) trusted outright
trusted_ak_keys_dir = "trusted_ak_keys"  # upstream's: every file in it (not dot files) is a trusted AK, like trusted_aks
max_trusted_ak_keys = 100           # more files than this in trusted_ak_keys_dir: refused at start (each file <= 64 KiB)
ak_ca_certs = ["ak-ca.pem"]         # AK/EK CA certificates (PEM, may hold several) an evidence ak_cert_chain must reach
[verifier_config.snp_verifier]      # optional: where `snp` finds VCEKs the evidence lacks (without it: evidence only)
vcek_sources = [                    # tried in order; without vcek_sources: [{ type = "KDS" }] (upstream's default)
  # path default: /opt/confidential-containers/attestation-service/kds-store
  { type = "OfflineStore", path = "kds-store" },  # AMD KDS layout: vcek/v1/<Product>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
  { type = "KDS", base_url = "https://kdsintf.amd.com", timeout = 10 },  # fetched VCEKs cached in the AS store
]
verification_time = "2025-01-01T00:00:00Z"  # TEST ONLY: pin the SNP clock
[verifier_config.nvidia_verifier]   # upstream's (and nvidia_dpu_verifier): accepted with a warning, not used:
type = "Local"                      # NVIDIA evidence (tee nvidia, nvidia-dpu) is not verified here and is refused
[policy_engine]                     # optional (ours): attestation-policy evaluation
evaluation_timeout = 2.0            # seconds per compile or evaluation; over it: PolicyEngineUnavailable (UNAVAILABLE)
workers = 2                         # policy worker processes (each evaluates one policy at a time)
max_worker_memory_mib = 1024        # resident memory per worker; over it: killed, PolicyEngineUnavailable
result_cache_entries = 4096         # appraisals of deterministic policies reused per process (0: off; docs/kbs-config.md)
[metrics]                           # optional: Prometheus /metrics over plain HTTP (off without it)
address = "127.0.0.1:9464"          # loopback or a monitoring network: the endpoint is not authenticated
[audit]                             # optional: append-only audit log of policy (and BuiltIn reference value) writes
path = "audit.jsonl"                # relative to the config file; fsync = "interval" | "always" | "never" (docs/audit.md)
```
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from attestation_service.appraisal_cache import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
from attestation_service.core.token import TokenSettings
from rvps.core.extractors import check_extractors_table
from rvps.core.limits import ReferenceValueLimits
from trustee_common.addresses import grpc_endpoint, parse_listen_address
from trustee_common.audit import AuditConfig, audit_config
from trustee_common.config import ConfigTable, collecting_warnings, config_warning, log_warnings, parse_config_file
from trustee_common.errors import ConfigError
from trustee_common.rego import PolicyEngineConfig
from trustee_common.storage import StorageConfig
from trustee_common.tls_config import ClientTls, ServerTls, parse_client_tls, parse_server_tls
from trustee_common.workers import check_count

DEFAULT_SOCKET = "127.0.0.1:50004"
DEFAULT_RVPS_ADDRESS = "127.0.0.1:50003"
NO_CONFIG_SQLITE_PATH = Path("attestation-service.sqlite3")
RVPS_TYPES = ("BuiltIn", "GrpcRemote")
TCB_UPDATE_TYPES = ("early", "standard")
NVIDIA_VERIFIERS = ("nvidia_verifier", "nvidia_dpu_verifier")
DEFAULT_MAX_TRUSTED_AK_KEYS = 100
#: Upstream's default `OfflineStore` path (a VCEK source without `path`).
DEFAULT_OFFLINE_STORE = Path("/opt/confidential-containers/attestation-service/kds-store")

#: Top-level keys of older upstream releases: accepted, ignored, named in one warning.
OBSOLETE_ROOT_KEYS = {
    "work_dir": "storage is storage_backend",
    "rvps_store_type": "use rvps_config",
    "attestation_token_config": "use attestation_token_broker",
}
#: `rvps_config` keys of older upstream releases (`remote_addr` is refused when not empty).
OBSOLETE_RVPS_KEYS = {
    "storage": "the 2024-12..2026-03 store format; BuiltIn reference values use storage_backend (or rvps_config.storage_type)",
    "store_type": "the pre-2024-12 store type; use storage_backend",
    "store_config": "the pre-2024-12 store settings; use storage_backend",
    "read_only": "no longer an option",
}

logger = logging.getLogger("attestation_service")


@dataclass(frozen=True)
class RvpsSettings:
    kind: str = "BuiltIn"
    address: str = DEFAULT_RVPS_ADDRESS
    #: GrpcRemote over https://: how to verify the RVPS and the client certificate to show it.
    tls: ClientTls | None = None
    #: Size caps of the BuiltIn provider (a GrpcRemote RVPS has its own).
    limits: ReferenceValueLimits = field(default_factory=ReferenceValueLimits)
    #: BuiltIn with `storage_type`: its own store (the AS's backends, another type); None: the AS's store.
    storage: StorageConfig | None = None


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
    #: `tcb_update_type`: which TCB Info / QE identity a collateral service returns ("early" or "standard").
    tcb_update_type: str = "early"
    #: Test-only: DCAP checks use this time instead of the clock (never reachable by clients).
    verification_time: datetime.datetime | None = None


@dataclass(frozen=True)
class TpmSettings:
    """`[verifier_config.tpm_verifier]`: files, resolved against the config file's folder."""

    trusted_aks: tuple[Path, ...] = ()
    ak_ca_certs: tuple[Path, ...] = ()
    #: `trusted_ak_keys_dir` (upstream's): every file in it is a trusted AK, like `trusted_aks`.
    trusted_ak_keys_dir: Path | None = None
    #: `max_trusted_ak_keys`: more files than this in `trusted_ak_keys_dir` is a ConfigError.
    max_trusted_ak_keys: int = DEFAULT_MAX_TRUSTED_AK_KEYS


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
    def load(cls, path: Path | None, *, quiet: bool = False) -> AsConfig:
        """The config in the file at `path` (defaults without one); `quiet`: no warning line (a worker: its supervisor logged it)."""
        if path is None:
            return cls(StorageConfig(sqlite_path=NO_CONFIG_SQLITE_PATH), RvpsSettings(), TokenSettings())
        return parse_config_file(path, lambda data, base, source: cls.parse(data, base, source=source, quiet=quiet))

    @classmethod
    def parse(cls, data: dict[str, Any], base: Path, where: str = "config", *, source: str | None = None,
              quiet: bool = False) -> AsConfig:
        """The config in `data` (a parsed file); `base` is the config file's folder, `where` names it in errors."""
        with collecting_warnings() as lines:
            root = ConfigTable(data, where)
            for key, reason in OBSOLETE_ROOT_KEYS.items():
                root.deprecated(key, reason)
            storage = StorageConfig.from_table(root.table("storage_backend"), base / "storage.sqlite3")
            sections = parse_sections(root, storage, base)
            tls = parse_server_tls(root.table("tls"), "tls")
            engine = _policy_engine(root)
            metrics = metrics_address(root)
            audit = audit_config(root.table("audit"), base) if root.has("audit") else None
            cache_ttl = _cache_ttl(root)
            workers = check_count(root.integer("workers", 1), "workers") if root.has("workers") else None
            root.finish()
        if not quiet:
            log_warnings(lines, where if source is None else f"config {source}", logger)
        return replace(
            sections, tls=tls, policy_engine=engine, metrics_address=metrics, audit=audit, appraisal_cache_ttl_seconds=cache_ttl,
            workers=workers,
        )


def parse_sections(table: ConfigTable, storage: StorageConfig, base: Path) -> AsConfig:
    """The AS keys an embedding KBS shares (`[attestation_service]` of `coco_as_builtin`): `storage_type`
    (overrides `storage`'s type), `rvps_config`, `attestation_token_broker` and `verifier_config`.

    Reads only those keys of `table` and does not `finish()` it (the caller owns its other keys);
    obsolete keys inside them are `ConfigTable.deprecated` warnings (`trustee_common.config.collecting_warnings`).
    """
    if table.has("storage_type"):
        storage = storage.with_type(table.required_string("storage_type"), "storage_type")
    rvps = _rvps(table.table("rvps_config"), storage)
    token, signer, verbose = _broker(table)
    dcap, tpm, snp = _verifiers(table.table("verifier_config"), base) if table.has("verifier_config") else (None, None, None)
    return AsConfig(storage, rvps, token, signer, verbose, dcap, tpm, snp)


def _policy_engine(root: ConfigTable) -> PolicyEngineConfig:
    """`[policy_engine]` (ours); the string form of old upstream releases ("opa") is obsolete."""
    if isinstance(root.raw("policy_engine"), str):
        root.deprecated("policy_engine", "the old engine name; OPA/Rego is the only engine")
        return PolicyEngineConfig()
    return PolicyEngineConfig.from_table(root.table("policy_engine"))


def _verifiers(table: ConfigTable, base: Path) -> tuple[DcapSettings | None, TpmSettings | None, SnpSettings | None]:
    """`[verifier_config]`: the DCAP, TPM and SNP settings; NVIDIA tables are accepted with a warning."""
    tpm = _tpm_verifier(table, base)
    snp = _snp_verifier(table, base)
    dcap = _dcap_verifier(table, base)
    for key in NVIDIA_VERIFIERS:
        if table.has(key):
            _check_nvidia(table.table(key), key)
            config_warning(f"verifier_config.{key} accepted but not used: NVIDIA evidence is not verified by this attestation "
                           "service (such evidence is refused)")
    table.finish()
    return dcap, tpm, snp


def _check_nvidia(table: ConfigTable, key: str) -> None:
    """Upstream's shapes of the (unused) NVIDIA tables, so a typo is still caught."""
    if key == "nvidia_verifier":
        kind = table.string("type", "Local") or ""
        if kind.lower() not in ("local", "remote"):
            raise ConfigError(f"verifier_config.nvidia_verifier.type {kind!r} is not one of Local, Remote")
        table.string("verifier_url")
    else:
        table.required_string("root_ca_cert_path")
        table.integer("max_cert_age_secs", 3600, minimum=0)
    table.finish()


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


def _rvps(table: ConfigTable, storage: StorageConfig) -> RvpsSettings:
    for key, reason in OBSOLETE_RVPS_KEYS.items():
        table.deprecated(key, reason)
    remote_addr = table.raw("remote_addr")
    if remote_addr not in (None, ""):
        raise ConfigError('rvps_config.remote_addr is obsolete: use type = "GrpcRemote" with address')
    table.deprecated("remote_addr", "obsolete, empty")
    kind = table.string("type", "BuiltIn") or "BuiltIn"
    if kind not in RVPS_TYPES:
        raise ConfigError(f"rvps_config.type {kind!r} is not one of {', '.join(RVPS_TYPES)}")
    address = DEFAULT_RVPS_ADDRESS
    tls = None
    limits = ReferenceValueLimits()
    own_store = None
    if kind == "GrpcRemote":
        address = table.string("address", DEFAULT_RVPS_ADDRESS) or DEFAULT_RVPS_ADDRESS
        endpoint = grpc_endpoint(address, "rvps_config.address")
        tls = parse_client_tls(table, "rvps_config", tls=endpoint.tls)
        for key in ("max_value_bytes", "max_total_bytes", "storage_type", "extractors"):
            if table.has(key):
                raise ConfigError(f"rvps_config.{key} applies to type = \"BuiltIn\" only; a GrpcRemote RVPS takes it in its own config")
    else:
        limits = ReferenceValueLimits.from_table(table, "rvps_config.")
        check_extractors_table(table.table("extractors"))
        if table.has("storage_type"):
            own_store = storage.with_type(table.required_string("storage_type"), "rvps_config.storage_type")
    table.finish()
    return RvpsSettings(kind, address, tls, limits, own_store)


def _dcap_verifier(table: ConfigTable, base: Path) -> DcapSettings | None:
    """`[verifier_config.dcap_verifier]`; a `file://` collateral_service is an offline collateral file."""
    if not table.has("dcap_verifier"):
        return None
    sub = table.table("dcap_verifier")
    where = "verifier_config.dcap_verifier"
    directory = sub.string("collateral_dir")
    offline = None if directory is None else base / directory
    service = sub.string("collateral_service")
    if service is not None and service.startswith("file:"):
        if offline is not None:
            raise ConfigError(f"{where}: give collateral_dir or a file:// collateral_service, not both")
        offline, service = _file_url(service, f"{where}.collateral_service"), None
    elif service is not None:
        _http_url(service, f"{where}.collateral_service")
    update = sub.string("tcb_update_type", "early") or ""
    if update not in TCB_UPDATE_TYPES:
        raise ConfigError(f"{where}.tcb_update_type {update!r} is not one of {', '.join(TCB_UPDATE_TYPES)}")
    sub.deprecated("use_secure_cert", "not used upstream either")
    pinned = sub.string("verification_time")
    dcap = DcapSettings(
        collateral_dir=offline,
        collateral_service=service,
        timeout=sub.integer("timeout", 10, minimum=1),
        accept_expired_collateral=sub.boolean("accept_expired_collateral", False),
        tcb_update_type=update,
        verification_time=None if pinned is None else _rfc3339(pinned, f"{where}.verification_time"),
    )
    sub.finish()
    return dcap


def _file_url(url: str, where: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(f"{where} {url!r} must be file:///absolute/path")
    return Path(unquote(parts.path))


def _http_url(url: str, where: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("https", "http") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{where} {url!r} must be an http(s):// URL or file:///path")
    return url


def _snp_verifier(verifier_config: ConfigTable, base: Path) -> SnpSettings | None:
    """`[verifier_config.snp_verifier]`; without `vcek_sources`, upstream's default: AMD KDS."""
    if not verifier_config.has("snp_verifier"):
        return None
    table = verifier_config.table("snp_verifier")
    stores: list[Path] = []
    kds_url, timeout = None, 10
    sources = table.tables("vcek_sources") if table.has("vcek_sources") else [ConfigTable({"type": "KDS"}, "default")]
    for source in sources:
        kind = source.required_string("type")
        if kind not in VCEK_SOURCE_TYPES:
            raise ConfigError(f"verifier_config.snp_verifier.vcek_sources type {kind!r} is not one of {', '.join(VCEK_SOURCE_TYPES)}")
        if kind == "OfflineStore":
            path = source.string("path")
            stores.append(DEFAULT_OFFLINE_STORE if path is None else base / path)
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
    """`[verifier_config.tpm_verifier]`: our file lists and upstream's directory of trusted AKs."""
    if not table.has("tpm_verifier"):
        return None
    sub = table.table("tpm_verifier")
    directory = sub.string("trusted_ak_keys_dir")
    settings = TpmSettings(
        trusted_aks=tuple(base / p for p in sub.strings("trusted_aks", [])),
        ak_ca_certs=tuple(base / p for p in sub.strings("ak_ca_certs", [])),
        trusted_ak_keys_dir=None if directory is None else base / directory,
        max_trusted_ak_keys=sub.integer("max_trusted_ak_keys", DEFAULT_MAX_TRUSTED_AK_KEYS, minimum=1),
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


def _broker(root: ConfigTable) -> tuple[TokenSettings, SignerFiles | None, bool]:
    """`attestation_token_broker` of `root` (EAR only: the Simple token is gone upstream since 2025-10)."""
    if isinstance(root.raw("attestation_token_broker"), str):
        raise ConfigError('attestation_token_broker must be a table such as {"duration_min": 5}; the string form of old '
                          'releases ("Simple"/"Ear") is refused upstream too')
    table = root.table("attestation_token_broker")
    kind = table.string("type", "Ear")
    if kind == "Simple":
        raise ConfigError('attestation_token_broker.type "Simple": the Simple token was removed upstream (2025-10); '
                          'only EAR tokens are issued: drop type or set it to "Ear"')
    if kind != "Ear":
        raise ConfigError(f"attestation_token_broker.type {kind!r} is not supported (only \"Ear\")")
    table.deprecated("policy_dir", "policies live in storage_backend")
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
