"""`kbs [-c|--config-file FILE] [--insecure-http] [--log-format text|json] [--workers N]`: run the KBS.

The config file may also come from the environment variable
`KBS_CONFIG_FILE`. Start-up errors are printed as one line naming the
problem, with exit status 2 for configuration errors and 1 otherwise.
With more than one worker (`--workers`, `$TRUSTEE_WORKERS`,
`[http_server] workers`, default: the available cores) this process checks
the config and the key files, then supervises that many single-process KBSs
sharing the sockets (`trustee_common.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from attestation_service.__main__ import load_signer

from kbs.config import KbsConfig, load_kbs_config
from kbs.server import check_binds, check_plugins, load_admin, load_trust, serve, tls_context
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.logsetup import FORMAT_ENV, FORMATS, setup_logging
from trustee_common.workers import WORKERS_ENV, in_worker, requested_workers, resolve_workers, run_workers

logger = logging.getLogger("kbs")

CONFIG_ENV = "KBS_CONFIG_FILE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbs", description="Key Broker Service (KBS protocol 0.4.0)")
    parser.add_argument(
        "-c",
        "--config-file",
        "--config",
        dest="config_file",
        default=os.environ.get(CONFIG_ENV),
        help=f"KBS config file (TOML); default: ${CONFIG_ENV}",
    )
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="accepted for compatibility; no longer needed: insecure_http = true alone serves plain HTTP (with a warning)",
    )
    parser.add_argument("--log-format", choices=FORMATS, help=f"log line format (default: ${FORMAT_ENV}, else [logging] format, else text)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"server processes sharing the sockets (default: ${WORKERS_ENV}, else [http_server] workers, "
                             "else the available cores; 1: this process serves)")
    return parser


def process_local_state(config: KbsConfig) -> str | None:
    """What a Memory store would keep inside one process (sessions, policies), if one is configured."""
    if config.storage.storage_type == "Memory":
        return 'storage_backend.storage_type "Memory"'
    if config.session_storage is not None and config.session_storage.storage_type == "Memory":
        return 'session_storage_type "Memory"'
    builtin = config.attestation_service.builtin
    if builtin is not None and builtin.service.storage.storage_type == "Memory":
        return 'attestation_service.storage_type "Memory"'
    return None


def run(config: KbsConfig, args: argparse.Namespace, argv: list[str]) -> int:
    """Serve in this process, or check what the workers would refuse and supervise them."""
    count = resolve_workers(requested_workers(args.workers, config.http_server.workers), process_local=process_local_state(config))
    if count == 1:
        asyncio.run(serve(config, allow_insecure_bind=args.insecure_http))
        return 0
    check_binds(config.http_server, allow_insecure_bind=args.insecure_http)
    tls_context(config.http_server)
    load_trust(config)
    load_admin(config.admin)
    builtin = config.attestation_service.builtin
    if builtin is not None and builtin.service.signer is not None:
        load_signer(builtin.service.signer)  # the embedded AS's signing key: refused here rather than by every worker
    check_plugins(config)
    addresses = [(s.host, s.port) for s in config.http_server.sockets]
    if config.observability.metrics_address is not None:
        addresses.append((config.observability.metrics_address.host, config.observability.metrics_address.port))
    return run_workers("kbs", argv, count, addresses)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    setup_logging(fmt=args.log_format, service="kbs")
    if not args.config_file:
        print(f"kbs: error: no config file (use --config-file or ${CONFIG_ENV})", file=sys.stderr)
        return 2
    try:
        config = load_kbs_config(args.config_file)
        if args.log_format is None and not os.environ.get(FORMAT_ENV) and config.observability.log_format:
            setup_logging(fmt=config.observability.log_format, service="kbs")
        if config.warnings and not in_worker():
            logger.warning("config %s: accepted with differences from upstream: %s", args.config_file, "; ".join(config.warnings))
        return run(config, args, argv)
    except ConfigError as exc:
        print(f"kbs: configuration error: {exc.detail}", file=sys.stderr)
        return 2
    except TrusteeError as exc:
        print(f"kbs: error: {exc.variant}: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kbs: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
