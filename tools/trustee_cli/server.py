"""`trustee run`: RVPS, AS and KBS as three supervised processes on one machine.

Prepares the data directory (`trustee_cli.material`), checks the ports,
starts `rvps`, `grpc-as` and `kbs` in that order (each once the previous
one's port is open), prints where everything is and the first
`kbs-client` command to try, then waits (`trustee_cli.supervisor`).
RVPS and AS always listen on 127.0.0.1; only the KBS uses `--host`. The
KBS and the AS each run `--workers` processes (default: the available
cores for the KBS, half of them for the AS, whose config `trustee_cli.configs`
writes with that `workers` key; `trustee_common.workers`); the RVPS runs one. With
`--tls` the KBS serves HTTPS and the KBS -> AS -> RVPS links use mutual TLS,
all with certificates from a local CA (`trustee_cli.tls_material`). With
`--as builtin` only the KBS runs, the AS inside it (`coco_as_builtin`).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from trustee_cli.configs import LOOPBACK, ServerPaths, ServerSettings, socket_address
from trustee_cli.material import prepare_server_dir
from trustee_cli.supervisor import ChildSpec, Supervisor, check_port_free, program
from trustee_common.storage.urls import redact_url


def _children(paths: ServerPaths, settings: ServerSettings, insecure_http: bool) -> list[ChildSpec]:
    common = [] if settings.log_format is None else ["--log-format", settings.log_format]
    workers = [] if settings.workers is None else ["--workers", str(settings.workers)]
    kbs_argv = [program("kbs"), "--config-file", str(paths.kbs_config), *common, *workers]
    if insecure_http and not settings.https:
        kbs_argv.append("--insecure-http")
    rvps_argv = [program("rvps"), "--config", str(paths.rvps_config), "--address", socket_address(LOOPBACK, settings.rvps_port), *common]
    as_argv = [program("grpc-as"), "--config-file", str(paths.as_config), "--socket", socket_address(LOOPBACK, settings.as_port), *common,
               *workers]
    kbs = ChildSpec("kbs", kbs_argv, settings.kbs_port, settings.host, port_flag="--kbs-port")
    if settings.builtin_as:
        return [kbs]
    return [
        ChildSpec("rvps", rvps_argv, settings.rvps_port, port_flag="--rvps-port"),
        ChildSpec("as", as_argv, settings.as_port, port_flag="--as-port"),
        kbs,
    ]


def _kbs_root(paths: ServerPaths, settings: ServerSettings) -> str | None:
    """The file a client must trust for the KBS's HTTPS certificate, None for HTTP."""
    if settings.tls_cert:
        return str(settings.tls_cert)
    return str(paths.tls_ca) if settings.tls else None


def _ca_line(paths: ServerPaths, settings: ServerSettings) -> str:
    if settings.tls_cert:
        return f"  TLS CA {paths.tls_ca} (KBS -> AS -> RVPS links; the KBS serves --tls-cert)"
    return f"  TLS CA {paths.tls_ca} (trust it: kbs-client --cert-file, trustee guest --kbs-cert; certificates in {paths.tls_dir})"


def banner(paths: ServerPaths, settings: ServerSettings) -> str:
    url = settings.kbs_url
    root = _kbs_root(paths, settings)
    cert = f" --cert-file {shlex.quote(root)}" if root else ""
    token = shlex.quote(str(paths.admin_token))
    embedded = f"embedded (SQLite, resources in {paths.repository})"
    storage = f"PostgreSQL {redact_url(settings.storage_url)}" if settings.storage_url else embedded
    grpc = "grpcs" if settings.tls else "grpc"
    links = " (mutual TLS)" if settings.tls else ""
    services = [f"  AS    {grpc}://{socket_address(LOOPBACK, settings.as_port)}{links}",
                f"  RVPS  {grpc}://{socket_address(LOOPBACK, settings.rvps_port)}{links}"]
    if settings.builtin_as:
        services = ["  AS    built into the KBS (coco_as_builtin; reference values in the KBS's storage)"]
    return "\n".join([
        f"trustee is running; data in {paths.root}",
        f"  KBS   {url}",
        *services,
        *([_ca_line(paths, settings)] if settings.tls else []),
        f"  admin token {paths.admin_token} (key {paths.admin_key})",
        f"  logs  {paths.logs_dir}/{'kbs' if settings.builtin_as else '{rvps,as,kbs}'}.log",
        f"  audit {paths.audit_log}",
        f"  storage {storage}",
        "Try first (development only: --allow-all releases to every attested TEE, the sample TEE included):",
        f"  kbs-client --url {url}{cert} config --admin-token-file {token} set-resource-policy --allow-all",
        *(["  (--cert-file must hold the root CA of the TLS certificate: the --tls-cert file does if it is self-signed "
           "or ends with its root)"] if settings.tls_cert and not settings.tls else []),
        "Stop with Ctrl-C.",
    ])


def run_server(data_dir: Path, settings: ServerSettings, *, insecure_http: bool) -> int:
    paths = ServerPaths.under(data_dir)
    children = _children(paths, settings, insecure_http)
    for spec in children:
        check_port_free(spec.host, spec.port, spec.port_flag)
    prepare_server_dir(paths, settings)
    supervisor = Supervisor(paths.logs_dir)
    supervisor.install_signal_handlers()
    if not supervisor.start_all(children):
        return 0
    print(banner(paths, settings), flush=True)
    return supervisor.supervise()
