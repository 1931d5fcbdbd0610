"""The data-directory layout and the config files `trustee` writes.

Pure: paths and settings in, config documents (dicts) and TOML text out;
no file I/O (`trustee_cli.material` writes them). The layout is the one in
docs/architecture.md ("Data directory of trustee run"); every path in a
generated config is absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomli_w import dumps

LOOPBACK = "127.0.0.1"


def socket_address(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _storage(path: Path, settings: ServerSettings) -> dict[str, Any]:
    if settings.storage_url:
        return {"storage_type": "Postgres", "backends": {"postgres": {"url": settings.storage_url}}}
    return {"storage_type": "Sqlite", "backends": {"sqlite": {"path": str(path)}}}


def _resource_plugin(paths: ServerPaths, settings: ServerSettings) -> dict[str, Any]:
    if settings.storage_url:
        return {"name": "resource", "type": "KvStorage"}  # namespace `repository` in PostgreSQL
    return {"name": "resource", "type": "LocalFs", "dir_path": str(paths.repository)}


@dataclass(frozen=True)
class ServerPaths:
    """Where `trustee run` keeps everything, below one absolute `root` (`ServerPaths.under`)."""

    root: Path
    admin_dir: Path
    admin_key: Path
    admin_public: Path
    admin_token: Path
    as_dir: Path
    kbs_dir: Path
    rvps_dir: Path
    logs_dir: Path
    audit_log: Path
    repository: Path
    kbs_config: Path
    as_config: Path
    rvps_config: Path
    #: `trustee run --tls`: the local CA and every service/client certificate.
    tls_dir: Path

    @classmethod
    def under(cls, root: Path) -> ServerPaths:
        root = root.absolute()
        admin, as_dir, kbs, rvps = root / "admin", root / "as", root / "kbs", root / "rvps"
        return cls(
            root=root,
            admin_dir=admin,
            admin_key=admin / "private.key",
            admin_public=admin / "public.pem",
            admin_token=admin / "token",
            as_dir=as_dir,
            kbs_dir=kbs,
            rvps_dir=rvps,
            logs_dir=root / "logs",
            audit_log=root / "logs" / "audit.jsonl",
            repository=kbs / "repository",
            kbs_config=kbs / "config.toml",
            as_config=as_dir / "config.toml",
            rvps_config=rvps / "config.toml",
            tls_dir=root / "tls",
        )

    @property
    def tls_ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def tls_cert(self, name: str) -> Path:
        """`kbs`, `as`, `rvps`, `kbs-client` or `as-client`: PEM chain, leaf first."""
        return self.tls_dir / f"{name}.pem"

    def tls_key(self, name: str) -> Path:
        return self.tls_dir / f"{name}.key"


@dataclass(frozen=True)
class ServerSettings:
    host: str
    kbs_port: int
    as_port: int
    rvps_port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A postgresql:// URL shared by all three services (resources included); None: embedded storage.
    storage_url: str | None = None
    #: `--tls`: generated CA and certificates; HTTPS for the KBS, mutual TLS between KBS, AS and RVPS.
    tls: bool = False
    #: `--tls-san`: more names for the generated KBS certificate.
    tls_names: tuple[str, ...] = ()
    #: `--log-format` passed to the three services (None: their default, `TRUSTEE_LOG_FORMAT` or text).
    log_format: str | None = None
    #: `--workers` of the KBS and the AS (None: their default, `TRUSTEE_WORKERS` or the available cores).
    workers: int | None = None
    #: `--as builtin`: the AS inside the KBS (`coco_as_builtin`, BuiltIn RVPS in the KBS's storage); no AS or RVPS process.
    builtin_as: bool = False
    #: The AS config's `workers` key (None: not written): `trustee run` writes half the cores
    #: (`trustee_common.workers.default_as_workers`); `--workers` and `TRUSTEE_WORKERS` override it.
    as_workers: int | None = None

    @property
    def https(self) -> bool:
        return self.tls or self.tls_cert is not None

    @property
    def kbs_url(self) -> str:
        shown = LOOPBACK if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 - only for display
        scheme = "https" if self.https else "http"
        return f"{scheme}://{socket_address(shown, self.kbs_port)}"


def _grpc_address(settings: ServerSettings, port: int) -> str:
    return f"{'https' if settings.tls else 'http'}://{socket_address(LOOPBACK, port)}"


def _client_tls(paths: ServerPaths, settings: ServerSettings, name: str) -> dict[str, str]:
    """CA and client certificate of a gRPC link (`--tls` only)."""
    if not settings.tls:
        return {}
    return {"ca_certificate": str(paths.tls_ca), "certificate": str(paths.tls_cert(name)), "private_key": str(paths.tls_key(name))}


def _server_tls(paths: ServerPaths, settings: ServerSettings, name: str) -> dict[str, Any]:
    """`[tls]` of the AS or RVPS: mutual TLS with the local CA (`--tls` only)."""
    if not settings.tls:
        return {}
    return {"tls": {"certificate": str(paths.tls_cert(name)), "private_key": str(paths.tls_key(name)), "client_ca": str(paths.tls_ca)}}


def kbs_config(paths: ServerPaths, settings: ServerSettings) -> dict[str, Any]:
    http: dict[str, Any] = {"sockets": [socket_address(settings.host, settings.kbs_port)]}
    if settings.tls_cert and settings.tls_key:
        http.update(insecure_http=False, certificate=str(settings.tls_cert), private_key=str(settings.tls_key))
    elif settings.tls:
        http.update(insecure_http=False, certificate=str(paths.tls_cert("kbs")), private_key=str(paths.tls_key("kbs")))
    else:
        http["insecure_http"] = True
    return {
        "http_server": http,
        "admin": {
            "authorization_mode": "AuthenticatedAuthorization",
            "authentication": {"bearer_jwt": {"identity_providers": [{"public_key_uri": str(paths.admin_public)}]}},
            "authorization": {"regex_acl": {"acls": [{"role": "admin", "allowed_endpoints": "^/kbs/v0/.+$"}]}},
        },
        "attestation_token": {"trusted_certs_paths": [str(paths.as_dir / "ca.pem")]},
        "attestation_service": builtin_as_table(paths, settings) if settings.builtin_as else {
            "type": "coco_as_grpc",
            "as_addr": _grpc_address(settings, settings.as_port),
            **_client_tls(paths, settings, "kbs-client"),
        },
        "storage_backend": _storage(paths.kbs_dir / "storage.sqlite3", settings),
        "plugins": [_resource_plugin(paths, settings)],
        "audit": {"path": str(paths.audit_log)},
        # Signed attestation reports (docs/attestation-reports.md), with the AS's token key: verifiable with as/ca.pem.
        "attestation_reports": {"signing_key": str(paths.as_dir / "token.key"),
                                "cert_chain": str(paths.as_dir / "token-cert-chain.pem")},
    }


def as_config(paths: ServerPaths, settings: ServerSettings) -> dict[str, Any]:
    return {
        "storage_backend": _storage(paths.as_dir / "storage.sqlite3", settings),
        "rvps_config": {
            "type": "GrpcRemote",
            "address": _grpc_address(settings, settings.rvps_port) if settings.tls else socket_address(LOOPBACK, settings.rvps_port),
            **_client_tls(paths, settings, "as-client"),
        },
        "attestation_token_broker": {
            "signer": {"key_path": str(paths.as_dir / "token.key"), "cert_path": str(paths.as_dir / "token-cert-chain.pem")},
        },
        "verifier_config": {"dcap_verifier": {"collateral_dir": str(paths.as_dir / "dcap-collateral")}},
        **_server_tls(paths, settings, "as"),
        "audit": {"path": str(paths.audit_log)},
        **({} if settings.as_workers is None else {"workers": settings.as_workers}),
    }


def builtin_as_table(paths: ServerPaths, settings: ServerSettings) -> dict[str, Any]:
    """`[attestation_service]` of `coco_as_builtin`: the standalone AS's token broker and verifiers, a BuiltIn RVPS."""
    standalone = as_config(paths, settings)
    return {"type": "coco_as_builtin", "rvps_config": {"type": "BuiltIn"},
            "attestation_token_broker": standalone["attestation_token_broker"], "verifier_config": standalone["verifier_config"]}


def rvps_config(paths: ServerPaths, settings: ServerSettings) -> dict[str, Any]:
    return {"storage_backend": _storage(paths.rvps_dir / "storage.sqlite3", settings), **_server_tls(paths, settings, "rvps"),
            "audit": {"path": str(paths.audit_log)}}


def server_config_files(paths: ServerPaths, settings: ServerSettings) -> dict[Path, str]:
    """Each generated server config file and its TOML text."""
    return {
        paths.rvps_config: dumps(rvps_config(paths, settings)),
        paths.as_config: dumps(as_config(paths, settings)),
        paths.kbs_config: dumps(kbs_config(paths, settings)),
    }


# --- guest side ----------------------------------------------------------------


@dataclass(frozen=True)
class GuestSettings:
    kbs_url: str
    rest_port: int
    aa_port: int
    cdh_port: int
    kbs_cert_pem: str | None = None
    #: `--sealed-secret-key`: the CDH's `[sealed_secret] verification_keys` (kbs:/// URIs, absolute paths).
    sealed_secret_keys: tuple[str, ...] = ()
    #: `--insecure-registry`: registries the CDH pulls from over plain HTTP.
    insecure_registries: tuple[str, ...] = ()
    #: `--image-decryption-key`: the CDH's `[image] decryption_keys` (kbs:/// URIs of JWE private keys).
    image_decryption_keys: tuple[str, ...] = ()
    #: The CDH's `[image] work_dir` (None: under the guest data directory).
    image_work_dir: str | None = None
    #: `--initdata-toml`: absolute path of the init-data TOML given to the attestation-agent (`-t`).
    init_data_toml: str | None = None


def aa_config(settings: GuestSettings) -> dict[str, Any]:
    kbs: dict[str, Any] = {"url": settings.kbs_url}
    if settings.kbs_cert_pem:
        kbs["cert"] = settings.kbs_cert_pem
    return {"token_configs": {"kbs": kbs}}


def cdh_config(settings: GuestSettings) -> dict[str, Any]:
    kbc: dict[str, Any] = {"name": "cc_kbc", "url": settings.kbs_url}
    if settings.kbs_cert_pem:
        kbc["kbs_cert"] = settings.kbs_cert_pem
    config: dict[str, Any] = {
        "socket": socket_address(LOOPBACK, settings.cdh_port),
        "kbc": kbc,
        "aa": {"aa_socket": socket_address(LOOPBACK, settings.aa_port)},
    }
    if settings.sealed_secret_keys:
        config["sealed_secret"] = {"verification_keys": list(settings.sealed_secret_keys)}
    image: dict[str, Any] = {}
    if settings.image_work_dir:
        image["work_dir"] = settings.image_work_dir
    if settings.image_decryption_keys:
        image["decryption_keys"] = list(settings.image_decryption_keys)
    if settings.insecure_registries:
        image["registry_config"] = {"registry": [{"location": r, "insecure": True} for r in settings.insecure_registries]}
    if image:
        config["image"] = image
    return config


def guest_config_files(root: Path, settings: GuestSettings) -> dict[Path, str]:
    return {root / "aa.toml": dumps(aa_config(settings)), root / "cdh.toml": dumps(cdh_config(settings))}
