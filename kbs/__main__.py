"""`kbs [-c|--config-file FILE] [--insecure-http] [--log-format text|json]`: run the KBS.

The config file may also come from the environment variable
`KBS_CONFIG_FILE`. Start-up errors are printed as one line naming the
problem, with exit status 2 for configuration errors and 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from kbs.config import load_kbs_config
from kbs.server import serve
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.logsetup import FORMAT_ENV, FORMATS, setup_logging

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
        help="allow plain HTTP (insecure_http = true) on non-loopback sockets",
    )
    parser.add_argument("--log-format", choices=FORMATS, help=f"log line format (default: ${FORMAT_ENV}, else [logging] format, else text)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(fmt=args.log_format, service="kbs")
    if not args.config_file:
        print(f"kbs: error: no config file (use --config-file or ${CONFIG_ENV})", file=sys.stderr)
        return 2
    try:
        config = load_kbs_config(args.config_file)
        if args.log_format is None and not os.environ.get(FORMAT_ENV) and config.observability.log_format:
            setup_logging(fmt=config.observability.log_format, service="kbs")
        asyncio.run(serve(config, allow_insecure_bind=args.insecure_http))
    except ConfigError as exc:
        print(f"kbs: configuration error: {exc.detail}", file=sys.stderr)
        return 2
    except TrusteeError as exc:
        print(f"kbs: error: {exc.variant}: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kbs: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
