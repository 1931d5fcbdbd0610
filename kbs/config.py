"""The KBS configuration file (TOML), parsed strictly into frozen dataclasses.

Every key is documented in docs/kbs-config.md; an unknown key, a wrong
type or an invalid value is a `ConfigError` naming it. Keys upstream's
files carry that we accept without using them (or map onto ours:
`[http_server] worker_count`, the pre-v0.17 `[admin]` forms) are accepted
with one warning each, collected in `KbsConfig.warnings` (logged once at
start); upstream features not built here (the `nebula-ca` plugin, the Vault and
cloud-KMS resource backends) are refused with a line saying so. This module only
parses and validates values: it reads no key or certificate file (the
wiring in `kbs.server` does), so a parsed config is plain data.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from attestation_service.config import OBSOLETE_ROOT_KEYS, AsConfig, parse_sections

from kbs.core.admin import AdminMode, compile_acl
from kbs.core.jwk_set import check_source
from kbs.https import TlsSettings, parse_tls_settings
from trustee_common.addresses import grpc_endpoint
from trustee_common.audit import AuditConfig, audit_config
from trustee_common.config import ConfigTable, collecting_warnings, config_warning, load_config_file
from trustee_common.errors import ConfigError
from trustee_common.http_serving import ConnectionLimits
from trustee_common.logsetup import FORMATS
from trustee_common.rego import PolicyEngineConfig
from trustee_common.storage import StorageConfig
from trustee_common.tls_config import ClientTls, parse_client_tls
from trustee_common.workers import check_count

DEFAULT_SOCKET = "127.0.0.1:8080"
DEFAULT_PAYLOAD_MIB = 2
DEFAULT_AS_ADDR = "http://127.0.0.1:50004"
DEFAULT_SESSION_MINUTES = 5.0
#: Requests one KBS process works on at once; more are refused with 503 `ServerBusy` (sized for 2 cores).
DEFAULT_MAX_IN_FLIGHT = 64
#: `admission_target_latency_ms`: median request latency the admission limit steers to (0: fixed limit).
DEFAULT_TARGET_LATENCY_MS = 100
MAX_TARGET_LATENCY_MS = 60_000
#: The `Retry-After` (seconds) sent with that 503.
DEFAULT_RETRY_AFTER_SECONDS = 1
MAX_RETRY_AFTER_SECONDS = 3600
#: Appraisal-epoch reading reuse (docs/token-freshness.md): the bound on how long a stale token may still be served.
DEFAULT_EPOCH_TTL_SECONDS = 1.0
MAX_EPOCH_TTL_SECONDS = 60.0
#: `[attestation_service] type` values and upstream's aliases (serde variant names), by the type each stands for.
AS_TYPES = {"coco_as_grpc": "coco_as_grpc", "CoCoASGrpc": "coco_as_grpc",
            "coco_as_builtin": "coco_as_builtin", "CoCoASBuiltIn": "coco_as_builtin",
            "intel_ta": "intel_ta", "IntelTA": "intel_ta"}
#: `jwks_refresh_interval_seconds` (ours): the least time between two fetches of a JWK set for an unknown kid.
DEFAULT_JWKS_REFRESH_SECONDS = 60.0
#: `[attestation_service] request_timeout_seconds` (ours, intel_ta): one call to Intel Trust Authority.
DEFAULT_ITA_TIMEOUT_SECONDS = 60.0
RESOURCE_BACKENDS = ("LocalFs", "KvStorage")
#: Upstream's `storage_backend_type` values and the `type` each stands for.
UPSTREAM_RESOURCE_BACKENDS = {"kvstorage": "KvStorage"}
#: Upstream resource backends not built here -> the cargo feature upstream needs for them.
UNSUPPORTED_RESOURCE_BACKENDS = {"vault": "vault", "aliyun": "aliyun", "aws": "aws", "gcp": "gcp"}
#: Upstream plugins not built here -> why (most need a non-default cargo feature upstream too).
UNSUPPORTED_PLUGINS = {
    "nebula-ca": "upstream builds it only with the non-default cargo feature nebula-ca-plugin",
}


class _Table(ConfigTable):
    """`ConfigTable` whose sub-tables are `_Table`s too."""

    def sub(self, key: str) -> _Table:
        return _Table(self._get(key, dict, {}), f"{self._where}.{key}")


@dataclass(frozen=True)
class SocketAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpServerConfig:
    sockets: tuple[SocketAddress, ...]
    insecure_http: bool
    private_key: Path | None
    certificate: Path | None
    payload_request_size: int
    #: The `tls_*` keys (profile, versions, ciphers, group); used only with HTTPS.
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    #: Overload shedding (`kbs.http.shed`): in-flight requests per process, and the Retry-After of the refusal.
    max_in_flight_requests: int = DEFAULT_MAX_IN_FLIGHT
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    admission_target_latency_ms: int = DEFAULT_TARGET_LATENCY_MS
    #: `workers`: server processes sharing the sockets (`trustee_common.workers`); None: not set (the cores, or the flag).
    workers: int | None = None

    @property
    def payload_limit_bytes(self) -> int:
        return self.payload_request_size * 1024 * 1024


@dataclass(frozen=True)
class IdentityProviderConfig:
    """One `identity_providers` entry: a PEM key file and/or a JWK-set file (at least one)."""

    public_key_path: Path | None
    issuer: str | None
    audience: str | None
    jwk_set_path: Path | None = None


@dataclass(frozen=True)
class AclConfig:
    role: str
    allowed_endpoints: str
    #: None: every method.
    allowed_methods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AdminConfig:
    mode: AdminMode
    identity_providers: tuple[IdentityProviderConfig, ...]
    acls: tuple[AclConfig, ...]


@dataclass(frozen=True)
class AttestationTokenConfig:
    trusted_certs_paths: tuple[Path, ...]
    insecure_header_jwk: bool
    extra_teekey_paths: tuple[str, ...]
    #: JWK sets (paths, `file://`, `https://`) whose keys verify tokens by `kid` (passport mode, ITA tokens).
    trusted_jwk_sets: tuple[str, ...] = ()
    jwks_refresh_interval_seconds: float = DEFAULT_JWKS_REFRESH_SECONDS


@dataclass(frozen=True)
class IntelTaConfig:
    """`type = "intel_ta"`: Intel Trust Authority appraises the evidence (`kbs.intel_ta`, docs/intel-trust-authority.md)."""

    base_url: str
    api_key: str = field(repr=False)
    #: ITA's JWK set: `https://` URL (or the portal, found by OpenID discovery), `file://` or a path.
    certs_file: str
    policy_ids: tuple[str, ...] = ()
    allow_unmatched_policy: bool = False
    jwks_refresh_interval_seconds: float = DEFAULT_JWKS_REFRESH_SECONDS
    request_timeout_seconds: float = DEFAULT_ITA_TIMEOUT_SECONDS
    #: ours: `"v2"` (upstream's `/appraisal/v2/attest`) or `"v1"` (`/appraisal/v1/attest`, flat body).
    api_version: str = "v2"


@dataclass(frozen=True)
class BuiltinAsConfig:
    """`type = "coco_as_builtin"`: the Attestation Service runs inside the KBS process (`kbs.builtin_as`)."""

    #: The AS's sections (`rvps_config`, `attestation_token_broker`, `verifier_config`) over its storage:
    #: the KBS's `[storage_backend]`, or that with `storage_type` overridden.
    service: AsConfig
    #: `[attestation_service.policy_engine]`: a policy-worker pool of the AS's own; None: the KBS's `[policy_engine]` pool.
    policy_engine: PolicyEngineConfig | None = None


@dataclass(frozen=True)
class AttestationServiceConfig:
    as_addr: str
    session_timeout_minutes: float
    #: How long a reading of the AS's appraisal epoch is reused (docs/token-freshness.md).
    appraisal_epoch_ttl_seconds: float = DEFAULT_EPOCH_TTL_SECONDS
    #: `https://` as_addr: CA of the AS's certificate and the KBS's client certificate (mutual TLS).
    tls: ClientTls | None = None
    #: `coco_as_builtin`: the embedded AS's settings; None: `coco_as_grpc` (the AS at `as_addr`).
    builtin: BuiltinAsConfig | None = None
    #: `intel_ta`: Intel Trust Authority instead of a CoCo AS.
    intel_ta: IntelTaConfig | None = None

    @property
    def session_lifetime_seconds(self) -> float:
        return self.session_timeout_minutes * 60.0


@dataclass(frozen=True)
class ResourcePluginConfig:
    """`LocalFs`: files under `dir_path`; `KvStorage`: namespace `repository` of the storage backend."""

    dir_path: Path | None
    kind: str = "LocalFs"


@dataclass(frozen=True)
class SamplePluginConfig:
    """Upstream's `sample` plugin: `item` is required and unused; the endpoint answers a fixed text to admins."""

    item: str


#: `[[plugins]] name = "pkcs11"` `rsa_mechanism` values (upstream's): OAEP with SHA-256, or with SHA-1 (what SoftHSM offers).
RSA_MECHANISMS = ("RsaPkcsOaep", "RsaPkcsTest")
#: `external` backends: the per-call and start-up connection bound when `timeout_ms` is not set.
DEFAULT_PLUGIN_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Pkcs11PluginConfig:
    """Upstream's `pkcs11` plugin: resources kept as secret-key objects in an HSM token (`kbs.plugins.pkcs11`).

    The PIN comes from exactly one of `pin` (upstream's key), `pin_file` or
    `pin_env` (ours); the files and the environment are read at start, not here.
    """

    module: Path
    slot_index: int = 0
    pin: str | None = field(default=None, repr=False)
    pin_file: Path | None = None
    pin_env: str | None = None
    rsa_mechanism: str = "RsaPkcsOaep"
    lookup_label: str = ""


@dataclass(frozen=True)
class ExternalBackendConfig:
    """One `backends` entry of the `external` plugin, served at `/kbs/v0/external/<name>/...`."""

    name: str
    endpoint: str
    #: `host:port` for grpc.
    target: str
    tls: bool
    timeout_ms: int | None = None
    ca_cert_path: Path | None = None


@dataclass(frozen=True)
class ExternalPluginConfig:
    backends: tuple[ExternalBackendConfig, ...]


#: `[[plugins]] name = "provisioner"` `key_length` bounds (ours; upstream takes any length).
MAX_PROVISIONER_KEY_LENGTH = 1024


@dataclass(frozen=True)
class ProvisionerPluginConfig:
    """Upstream's `provisioner` plugin: per-VM disk keys in namespace `provisioner` (`kbs.plugins.provisioner`)."""

    key_length: int = 32


PluginConfig = Pkcs11PluginConfig | ExternalPluginConfig | ProvisionerPluginConfig


@dataclass(frozen=True)
class ObservabilityConfig:
    """`[audit]`, `[metrics]` and `[logging]` (ours; upstream has none of them)."""

    audit: AuditConfig | None = None
    #: Serve `/metrics` on this address only (plain HTTP) instead of on the main sockets.
    metrics_address: SocketAddress | None = None
    access_log: bool = False
    log_format: str | None = None


DEFAULT_REPORT_RETENTION_DAYS = 30.0
DEFAULT_REPORT_QUEUE = 1024
MAX_REPORT_RETENTION_DAYS = 36500.0


@dataclass(frozen=True)
class AttestationReportsConfig:
    """`[attestation_reports]` (ours; docs/attestation-reports.md): a signed report per `/attest`."""

    enabled: bool = False
    #: The AS's token key and its chain (PEM); None: the embedded AS's signer (`coco_as_builtin` only).
    signing_key: Path | None = None
    cert_chain: Path | None = None
    retention_days: float = DEFAULT_REPORT_RETENTION_DAYS
    #: Reports waiting to be written; more are dropped (and counted) rather than slow `/attest`.
    queue_size: int = DEFAULT_REPORT_QUEUE


@dataclass(frozen=True)
class KbsConfig:
    http_server: HttpServerConfig
    admin: AdminConfig
    attestation_token: AttestationTokenConfig
    attestation_service: AttestationServiceConfig
    storage: StorageConfig
    resource_plugin: ResourcePluginConfig | None
    #: `session_storage_type`: sessions in another backend (e.g. Redis); None: in `storage`.
    session_storage: StorageConfig | None = None
    #: `[policy_engine]`: resource-policy evaluation time limit and worker processes.
    policy_engine: PolicyEngineConfig = field(default_factory=PolicyEngineConfig)
    observability: ObservabilityConfig = ObservabilityConfig()
    #: `[[plugins]] name = "sample"`: served at `/kbs/v0/sample/...`.
    sample_plugin: SamplePluginConfig | None = None
    attestation_reports: AttestationReportsConfig = AttestationReportsConfig()
    #: The plugins served through the generic gateway (`kbs.plugins`): `pkcs11`, `external`.
    plugins: tuple[PluginConfig, ...] = ()
    #: One line per key accepted but unused or mapped (`ConfigTable.deprecated`); the KBS logs them once at start.
    warnings: tuple[str, ...] = ()


def load_kbs_config(path: str | Path) -> KbsConfig:
    """Read and validate the file; the default SQLite file sits next to it."""
    path = Path(path)
    return parse_kbs_config(load_config_file(path), default_dir=path.parent)


def parse_kbs_config(data: dict[str, Any], *, default_dir: Path) -> KbsConfig:
    """Validate a parsed file; `warnings` of the result holds the deprecation lines (not logged here)."""
    with collecting_warnings() as warnings:
        config = _parse(data, default_dir)
    return replace(config, warnings=tuple(warnings))


def _parse(data: dict[str, Any], default_dir: Path) -> KbsConfig:
    root = _Table(data, "config")
    session_type = root.string("session_storage_type")
    plugins = _plugins(root.tables("plugins"))
    storage = StorageConfig.from_table(root.table("storage_backend"), default_dir / "storage.sqlite3")
    config = KbsConfig(
        http_server=_http_server(root.sub("http_server")),
        admin=_admin(root, "admin"),
        attestation_token=_attestation_token(root.sub("attestation_token")),
        attestation_service=_attestation_service(root.sub("attestation_service"), storage, default_dir),
        storage=storage,
        resource_plugin=plugins.resource,
        sample_plugin=plugins.sample,
        plugins=plugins.others,
        policy_engine=PolicyEngineConfig.from_table(_policy_engine_table(root)),
        observability=_observability(root, default_dir),
        attestation_reports=_attestation_reports(root),
    )
    root.finish()
    if session_type is not None:
        config = replace(config, session_storage=config.storage.for_sessions(session_type))
    # The KBS trusts its embedded AS's key (kbs.builtin_as) and ITA's certs_file (kbs.intel_ta).
    service = config.attestation_service
    own = service.builtin is not None or service.intel_ta is not None
    token = config.attestation_token
    if not own and not token.trusted_certs_paths and not token.trusted_jwk_sets and not token.insecure_header_jwk:
        raise ConfigError(
            "attestation_token: cannot verify attestation tokens since no trusted verification material is provided "
            "(set trusted_certs_paths or trusted_jwk_sets, or insecure_header_jwk = true for development)"
        )
    return config


def parse_socket(text: str, where: str) -> SocketAddress:
    """`ip:port` or `[ipv6]:port`."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not <ip>:<port>") from None
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"{where}: {text!r} is not <ip>:<port>")
    return SocketAddress(host, number)


def _http_server(table: _Table) -> HttpServerConfig:
    sockets = tuple(parse_socket(s, "http_server.sockets") for s in table.strings("sockets", [DEFAULT_SOCKET]))
    if not sockets:
        raise ConfigError("http_server.sockets must list at least one <ip>:<port>")
    insecure = table.boolean("insecure_http", False)
    key = table.string("private_key")
    cert = table.string("certificate")
    size = table.integer("payload_request_size", DEFAULT_PAYLOAD_MIB, minimum=1)
    tls = parse_tls_settings(table)
    limits = _connection_limits(table)
    in_flight = table.integer("max_in_flight_requests", DEFAULT_MAX_IN_FLIGHT, minimum=1)
    retry_after = table.integer("retry_after_seconds", DEFAULT_RETRY_AFTER_SECONDS, minimum=0)
    target = table.integer("admission_target_latency_ms", DEFAULT_TARGET_LATENCY_MS, minimum=0)
    workers = check_count(table.integer("workers", 1), "http_server.workers") if table.has("workers") else None
    workers = _worker_count(table, workers)
    table.finish()
    if retry_after > MAX_RETRY_AFTER_SECONDS:
        raise ConfigError(f"http_server.retry_after_seconds must be <= {MAX_RETRY_AFTER_SECONDS}, got {retry_after}")
    if target > MAX_TARGET_LATENCY_MS:
        raise ConfigError(f"http_server.admission_target_latency_ms must be <= {MAX_TARGET_LATENCY_MS}, got {target}")
    if not insecure and (key is None or cert is None):
        raise ConfigError("http_server: certificate and private_key are required unless insecure_http = true")
    return HttpServerConfig(sockets, insecure, None if key is None else Path(key), None if cert is None else Path(cert), size,
                            tls=tls, limits=limits, max_in_flight_requests=in_flight, retry_after_seconds=retry_after,
                            admission_target_latency_ms=target,
                            workers=workers)


def _worker_count(table: _Table, workers: int | None) -> int | None:
    """Upstream's `worker_count` (actix threads in one process): our `workers` (processes) when that is absent."""
    if not table.has("worker_count"):
        return workers
    if workers is not None:
        table.deprecated("worker_count", f"upstream's actix thread count, ignored (workers = {workers} is set)")
        return workers
    count = table.integer("worker_count", 1)
    table.deprecated("worker_count", f"upstream's actix thread count, taken as workers = {count} (server processes)")
    return check_count(count, "http_server.worker_count")


def _connection_limits(table: _Table) -> ConnectionLimits:
    default = ConnectionLimits()
    return ConnectionLimits(
        header_read_timeout=table.number("header_read_timeout", default.header_read_timeout, minimum_exclusive=0),
        keep_alive_timeout=table.number("keep_alive_timeout", default.keep_alive_timeout, minimum_exclusive=0),
        max_connections=table.integer("max_connections", default.max_connections, minimum=1),
    )


def _admin(root: _Table, key: str) -> AdminConfig:
    if not root.has(key):
        raise ConfigError("config: the [admin] table is required (authorization_mode = ...)")
    table = root.sub(key)
    if not table.has("authorization_mode") and any(table.has(k) for k in ("type", "insecure_api", "auth_public_key")):
        return _legacy_admin(table)
    mode_name = table.required_string("authorization_mode")
    try:
        mode = AdminMode(mode_name)
    except ValueError:
        names = ", ".join(m.value for m in AdminMode)
        raise ConfigError(f"admin.authorization_mode {mode_name!r} is not one of {names}") from None
    authentication = table.sub("authentication")
    bearer = authentication.sub("bearer_jwt")
    providers = tuple(_identity_provider(t) for t in bearer.tables("identity_providers"))
    authorization = table.sub("authorization")
    regex_acl = authorization.sub("regex_acl")
    acls = tuple(_acl(t) for t in regex_acl.tables("acls"))
    for done in (bearer, authentication, regex_acl, authorization, table):
        done.finish()
    if mode is AdminMode.AUTHENTICATED and not providers:
        raise ConfigError("admin.authentication.bearer_jwt.identity_providers needs at least one entry for AuthenticatedAuthorization")
    return AdminConfig(mode, providers, acls)


def _legacy_admin(table: _Table) -> AdminConfig:
    """Pre-v0.17 `[admin]` forms (upstream refuses them today): `type` (v0.16-0.17), `insecure_api`/`auth_public_key` (<= v0.15)."""
    kind = table.string("type")
    if kind is not None:
        if kind not in (AdminMode.ALLOW_ALL.value, AdminMode.DENY_ALL.value):
            raise ConfigError(
                f"admin.type {kind!r} (the v0.16-0.17 form) is not supported: use authorization_mode = "
                '"AuthenticatedAuthorization" with [admin.authentication.bearer_jwt] and [admin.authorization.regex_acl]'
            )
        table.deprecated("type", f'the v0.16-0.17 form, read as authorization_mode = "{kind}"')
        table.finish()
        return AdminConfig(AdminMode(kind), (), ())
    insecure = table.boolean("insecure_api", False)
    key = table.string("auth_public_key")
    if key is not None and not insecure:
        raise ConfigError(
            "admin.auth_public_key (the <= v0.15 form) is not supported: its tokens carry no role claim; use "
            f'authorization_mode = "AuthenticatedAuthorization", identity_providers = [{{ public_key_uri = "{key}" }}] '
            "and an ACL for the role your tokens carry"
        )
    mode = AdminMode.ALLOW_ALL if insecure else AdminMode.DENY_ALL
    table.deprecated("insecure_api", f'the <= v0.15 form, read as authorization_mode = "{mode.value}"')
    table.deprecated("auth_public_key", "the <= v0.15 form, ignored since insecure_api = true")
    table.finish()
    return AdminConfig(mode, (), ())


def _identity_provider(table: ConfigTable) -> IdentityProviderConfig:
    key_uri = table.string("public_key_uri")
    jwks_uri = table.string("jwk_set_uri")
    issuer = table.string("issuer")
    audience = table.string("audience")
    table.finish()
    if key_uri is None and jwks_uri is None:
        raise ConfigError("admin.authentication.bearer_jwt.identity_providers: each entry needs public_key_uri and/or jwk_set_uri")
    key_path = None if key_uri is None else _file_uri(key_uri, "public_key_uri")
    jwks_path = None if jwks_uri is None else _file_uri(jwks_uri, "jwk_set_uri")
    return IdentityProviderConfig(key_path, issuer, audience, jwks_path)


def _file_uri(uri: str, key: str) -> Path:
    """`file:///abs/path` or a plain path; remote URIs are refused (the KBS fetches nothing over the network)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{key} {uri!r}: file URIs must be local (file:///path)")
        return Path(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        raise ConfigError(
            f"{key} {uri!r}: {parts.scheme}:// is not supported (the KBS does not fetch keys over the network); "
            "download the key or JWK set and point to it with file:// or a path"
        )
    if parts.scheme and len(parts.scheme) > 1:
        raise ConfigError(f"{key} {uri!r}: only file:// URIs and local paths are supported")
    return Path(uri)


def _acl(table: ConfigTable) -> AclConfig:
    role = table.required_string("role")
    endpoints = table.required_string("allowed_endpoints")
    methods = tuple(table.strings("allowed_methods")) if table.has("allowed_methods") else None
    table.finish()
    compile_acl(role, endpoints, "admin.authorization.regex_acl.acls", methods)
    return AclConfig(role, endpoints, methods)


def _attestation_token(table: _Table) -> AttestationTokenConfig:
    paths = tuple(Path(p) for p in table.strings("trusted_certs_paths"))
    insecure = table.boolean("insecure_header_jwk", False)
    pointers = tuple(table.strings("extra_teekey_paths"))
    jwk_sets = tuple(check_source(s, "attestation_token.trusted_jwk_sets") for s in table.strings("trusted_jwk_sets"))
    refresh = table.number("jwks_refresh_interval_seconds", DEFAULT_JWKS_REFRESH_SECONDS, minimum_exclusive=-math.inf)
    table.finish()
    for pointer in pointers:
        if pointer and not pointer.startswith("/"):
            raise ConfigError(f"attestation_token.extra_teekey_paths: {pointer!r} is not a JSON pointer (must start with '/')")
    return AttestationTokenConfig(paths, insecure, pointers, jwk_sets, _refresh_interval(refresh, "attestation_token"))


def _refresh_interval(value: float, where: str) -> float:
    if not 0.0 <= value <= 86400.0:
        raise ConfigError(f"{where}.jwks_refresh_interval_seconds must be 0..86400 seconds, got {value:g}")
    return value


def _attestation_service(table: _Table, storage: StorageConfig, base: Path) -> AttestationServiceConfig:
    """`coco_as_grpc` (default; `as_addr`, `pool_size`, TLS keys) or `coco_as_builtin` (the AS's own sections)."""
    name = table.string("type", "coco_as_grpc") or "coco_as_grpc"
    kind = AS_TYPES.get(name)
    if kind is None:
        raise ConfigError(f"attestation_service.type {name!r} is not supported (coco_as_grpc, coco_as_builtin or intel_ta)")
    timeout = table.number("timeout", DEFAULT_SESSION_MINUTES, minimum_exclusive=0.0)
    if kind == "intel_ta":
        ita = _intel_ta(table)
        table.finish()
        return AttestationServiceConfig("", timeout, intel_ta=ita)
    epoch_ttl = table.number("appraisal_epoch_ttl_seconds", DEFAULT_EPOCH_TTL_SECONDS, minimum_exclusive=-math.inf)
    if not 0.0 <= epoch_ttl <= MAX_EPOCH_TTL_SECONDS:
        limit = f"0..{MAX_EPOCH_TTL_SECONDS:g}"
        raise ConfigError(f"attestation_service.appraisal_epoch_ttl_seconds must be {limit} seconds, got {epoch_ttl:g}")
    if kind == "coco_as_builtin":
        builtin = _builtin_as(table, storage, base)
        table.finish()
        return AttestationServiceConfig("", timeout, appraisal_epoch_ttl_seconds=epoch_ttl, builtin=builtin)
    addr = table.string("as_addr", DEFAULT_AS_ADDR) or DEFAULT_AS_ADDR
    table.integer("pool_size", 100, minimum=1)
    if urlsplit(addr).scheme not in ("http", "https"):
        raise ConfigError(f"attestation_service.as_addr {addr!r} must be an http:// or https:// URL")
    endpoint = grpc_endpoint(addr, "attestation_service.as_addr")
    tls = parse_client_tls(table, "attestation_service", tls=endpoint.tls)
    table.finish()
    return AttestationServiceConfig(addr, timeout, appraisal_epoch_ttl_seconds=epoch_ttl, tls=tls)


def _intel_ta(table: _Table) -> IntelTaConfig:
    """upstream's `base_url`, `api_key`, `certs_file`, `policy_ids`, `allow_unmatched_policy`; ours: the two bounds
    and `api_version`."""
    base_url = table.required_string("base_url")
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigError(f"attestation_service.base_url {base_url!r} must be an https:// URL (the API key travels with each call)")
    api_key = table.required_string("api_key")
    if not api_key.strip():
        raise ConfigError("attestation_service.api_key is empty")
    certs = check_source(table.required_string("certs_file"), "attestation_service.certs_file")
    policy_ids = tuple(table.strings("policy_ids"))
    allow = table.boolean("allow_unmatched_policy", False)
    refresh = table.number("jwks_refresh_interval_seconds", DEFAULT_JWKS_REFRESH_SECONDS, minimum_exclusive=-math.inf)
    request_timeout = table.number("request_timeout_seconds", DEFAULT_ITA_TIMEOUT_SECONDS, minimum_exclusive=0.0)
    if request_timeout > 600.0:
        raise ConfigError(f"attestation_service.request_timeout_seconds must be at most 600, got {request_timeout:g}")
    api_version = str(table.string("api_version", "v2"))
    if api_version not in ("v1", "v2"):
        raise ConfigError(f"attestation_service.api_version must be \"v1\" or \"v2\", got {api_version!r}")
    for key in ("as_addr", "pool_size"):
        if table.has(key):
            raise ConfigError(f"attestation_service.{key} is for type = \"coco_as_grpc\"; intel_ta calls base_url")
    return IntelTaConfig(base_url, api_key, certs, policy_ids, allow, _refresh_interval(refresh, "attestation_service"),
                         request_timeout, api_version)


def _builtin_as(table: _Table, storage: StorageConfig, base: Path) -> BuiltinAsConfig:
    """The embedded AS: the AS's own sections (`attestation_service.config.parse_sections`: upstream's `storage_type`
    override, `rvps_config`, `attestation_token_broker`, `verifier_config`), plus our `policy_engine`; the AS's
    obsolete top-level keys (`work_dir`, ...) are accepted with a warning, as in the AS's own file."""
    for key, reason in OBSOLETE_ROOT_KEYS.items():
        table.deprecated(key, reason)
    engine = None
    if isinstance(table.raw("policy_engine"), str):  # older upstream configs: policy_engine = "opa", the only engine
        if str(table.raw("policy_engine")).lower() != "opa":
            raise ConfigError("attestation_service.policy_engine must be a table (or \"opa\", as older upstream configs say)")
        table.deprecated("policy_engine", "the old engine name; OPA/Rego is the only engine")
    elif table.has("policy_engine"):
        engine = PolicyEngineConfig.from_table(table.table("policy_engine"), "attestation_service.policy_engine")
    for key in ("as_addr", "pool_size"):
        if table.has(key):
            raise ConfigError(f"attestation_service.{key} is for type = \"coco_as_grpc\"; coco_as_builtin runs the AS in the KBS")
    return BuiltinAsConfig(parse_sections(table, storage, base), engine)


@dataclass(frozen=True)
class _Plugins:
    resource: ResourcePluginConfig | None = None
    sample: SamplePluginConfig | None = None
    others: tuple[PluginConfig, ...] = ()


SUPPORTED_PLUGINS = ("resource", "sample", "pkcs11", "external", "provisioner")


def _plugins(tables: list[ConfigTable]) -> _Plugins:
    resource: ResourcePluginConfig | None = None
    sample: SamplePluginConfig | None = None
    others: list[PluginConfig] = []
    seen: set[str] = set()
    supported = ", ".join(SUPPORTED_PLUGINS)
    for table in tables:
        name = table.required_string("name")
        if name in UNSUPPORTED_PLUGINS:
            raise ConfigError(f"plugins: plugin {name!r} is not supported here ({UNSUPPORTED_PLUGINS[name]}); supported: {supported}")
        if name not in SUPPORTED_PLUGINS:
            raise ConfigError(f"plugins: plugin {name!r} is not supported (only {supported})")
        if name in seen:
            raise ConfigError(f"plugins: the {name} plugin is configured twice")
        seen.add(name)
        if name == "resource":
            resource = _resource_backend(table)
        elif name == "sample":
            sample = SamplePluginConfig(table.required_string("item"))
        elif name == "pkcs11":
            others.append(_pkcs11(table))
        elif name == "provisioner":
            others.append(_provisioner(table))
        else:
            others.append(_external(table))
        table.finish()
    return _Plugins(resource, sample, tuple(others))


def _provisioner(table: ConfigTable) -> ProvisionerPluginConfig:
    length = table.integer("key_length", 32, minimum=16)
    if length > MAX_PROVISIONER_KEY_LENGTH:
        raise ConfigError(f"plugins.provisioner.key_length must be <= {MAX_PROVISIONER_KEY_LENGTH}, got {length}")
    return ProvisionerPluginConfig(length)


def _pkcs11(table: ConfigTable) -> Pkcs11PluginConfig:
    module = table.required_string("module")
    slot = table.integer("slot_index", 0, minimum=0)
    if slot > 255:
        raise ConfigError(f"plugins.pkcs11.slot_index must be 0..255, got {slot}")
    pin, pin_file, pin_env = table.string("pin"), table.string("pin_file"), table.string("pin_env")
    if sum(v is not None for v in (pin, pin_file, pin_env)) != 1:
        raise ConfigError("plugins.pkcs11: set exactly one of pin, pin_file and pin_env (the token's user PIN)")
    mechanism = table.string("rsa_mechanism", "RsaPkcsOaep") or "RsaPkcsOaep"
    if mechanism not in RSA_MECHANISMS:
        raise ConfigError(f"plugins.pkcs11.rsa_mechanism {mechanism!r} is not one of {', '.join(RSA_MECHANISMS)}")
    if pin_env is not None and not pin_env:
        raise ConfigError("plugins.pkcs11.pin_env must name an environment variable")
    return Pkcs11PluginConfig(Path(module), slot, pin, None if pin_file is None else Path(pin_file), pin_env, mechanism,
                              table.string("lookup_label", "") or "")


def _external(table: ConfigTable) -> ExternalPluginConfig:
    backends = tuple(_external_backend(t) for t in table.tables("backends"))
    if not backends:
        raise ConfigError("plugins.external.backends: at least one backend is required")
    names = [b.name for b in backends]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"plugins.external.backends: backend name {name!r} is used twice")
    return ExternalPluginConfig(backends)


def _external_backend(table: ConfigTable) -> ExternalBackendConfig:
    where = table.where.removeprefix("config.")
    name = table.required_string("name")
    endpoint = table.required_string("endpoint")
    timeout = table.integer("timeout_ms", 0, minimum=1) if table.has("timeout_ms") else None
    ca = table.string("ca_cert_path")
    tls_mode = table.string("tls_mode")
    table.finish()
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"{where}.name {name!r} must be a non-empty URL path segment")
    scheme = urlsplit(endpoint).scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"{where}.endpoint {endpoint!r} must start with http:// or https://")
    parsed = grpc_endpoint(endpoint, f"{where}.endpoint")
    if parsed.tls and ca is None:
        raise ConfigError(f"{where}: an https:// endpoint requires ca_cert_path (the PEM CA that signed the plugin's certificate)")
    if tls_mode is not None and tls_mode.lower() != ("tls" if parsed.tls else "insecure"):
        raise ConfigError(f"{where}.tls_mode {tls_mode!r} contradicts the endpoint's scheme {scheme}://")
    if not parsed.tls and ca is not None:
        config_warning(f"{where}.ca_cert_path: ignored for the plaintext endpoint {endpoint} (as upstream)")
        ca = None
    return ExternalBackendConfig(name, endpoint, parsed.target, parsed.tls, timeout, None if ca is None else Path(ca))


def _resource_backend(table: ConfigTable) -> ResourcePluginConfig:
    """`type = "LocalFs"` (with `dir_path`) or `"KvStorage"`; upstream's `storage_backend_type = "kvstorage"` too.

    Without `type` and `storage_backend_type`: LocalFs when `dir_path` is given, else KvStorage (upstream's default).
    """
    kind = table.string("type")
    upstream = table.string("storage_backend_type")
    if upstream is not None:
        feature = UNSUPPORTED_RESOURCE_BACKENDS.get(upstream.lower())
        if feature is not None:
            raise ConfigError(
                f"plugins: resource storage_backend_type {upstream!r} is not supported here (upstream builds it only with "
                f"the non-default cargo feature {feature}); supported: kvstorage"
            )
        if upstream.lower() not in UPSTREAM_RESOURCE_BACKENDS:
            raise ConfigError(f"plugins: resource storage_backend_type {upstream!r} is not supported (only kvstorage)")
        if kind is not None and kind != UPSTREAM_RESOURCE_BACKENDS[upstream.lower()]:
            raise ConfigError(f"plugins: resource type {kind!r} contradicts storage_backend_type {upstream!r}")
        kind = UPSTREAM_RESOURCE_BACKENDS[upstream.lower()]
    kind = kind or ("LocalFs" if table.has("dir_path") else "KvStorage")
    if kind not in RESOURCE_BACKENDS:
        raise ConfigError(f"plugins: resource backend type {kind!r} is not one of {', '.join(RESOURCE_BACKENDS)}")
    if kind == "KvStorage":
        if table.has("dir_path"):
            raise ConfigError("plugins: dir_path is only for the LocalFs resource backend (KvStorage keeps resources in storage_backend)")
        return ResourcePluginConfig(None, kind)
    return ResourcePluginConfig(Path(table.required_string("dir_path")), kind)


def _attestation_reports(root: _Table) -> AttestationReportsConfig:
    """Present: enabled unless `enabled = false`; absent: no reports."""
    if not root.has("attestation_reports"):
        return AttestationReportsConfig()
    table = root.sub("attestation_reports")
    enabled = table.boolean("enabled", True)
    key, chain = table.string("signing_key"), table.string("cert_chain")
    retention = table.number("retention_days", DEFAULT_REPORT_RETENTION_DAYS, minimum_exclusive=0.0)
    queue = table.integer("queue_size", DEFAULT_REPORT_QUEUE, minimum=1)
    table.finish()
    if chain is not None and key is None:
        raise ConfigError("attestation_reports.cert_chain: given without signing_key")
    if not math.isfinite(retention) or retention > MAX_REPORT_RETENTION_DAYS:
        raise ConfigError(f"attestation_reports.retention_days: at most {MAX_REPORT_RETENTION_DAYS:g}")
    return AttestationReportsConfig(enabled, None if key is None else Path(key), None if chain is None else Path(chain),
                                    retention, queue)


def _policy_engine_table(root: _Table) -> ConfigTable:
    """`[policy_engine]` (ours); upstream's old `policy_path` there (a file it no longer reads) is accepted with a warning."""
    table = root.table("policy_engine")
    table.deprecated("policy_path", "the old resource-policy file of upstream's KBS, ignored: the policy is kept in "
                     "storage_backend (set it with POST /kbs/v0/resource-policy)")
    return table


def _observability(root: _Table, base: Path) -> ObservabilityConfig:
    audit = audit_config(root.sub("audit"), base) if root.has("audit") else None
    metrics = root.sub("metrics")
    address = metrics.string("address")
    metrics.finish()
    logging_table = root.sub("logging")
    access_log = logging_table.boolean("access_log", False)
    log_format = logging_table.string("format")
    logging_table.finish()
    if log_format is not None and log_format not in FORMATS:
        raise ConfigError(f"logging.format {log_format!r} is not one of {', '.join(FORMATS)}")
    metrics_address = None if address is None else parse_socket(address, "metrics.address")
    return ObservabilityConfig(audit, metrics_address, access_log, log_format)
