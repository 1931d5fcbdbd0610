"""`rvps [-c|--config FILE] [-a|--address 127.0.0.1:50003] [--log-format text|json]`: the RVPS gRPC server.

The composition root: reads the config, opens the store, loads the
start-up reference values, and serves until SIGTERM/SIGINT (exit 0), over
TLS or mutual TLS with `[tls]`; the write RPCs follow `grpc_tls.WriteGuard`
(refused on a non-loopback address without mutual TLS unless
`--insecure-allow-writes`), with `/metrics` over HTTP on `[metrics] address`
when configured. A bad
config, values file or address exits 1 with one line naming the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rvps.config import DEFAULT_ADDRESS, RvpsConfig
from rvps.core.values_file import parse_values_file
from rvps.metrics import RvpsMetrics
from rvps.server import SERVICE_NAME, ReferenceValueServicer
from rvps.service import ReferenceValueService, utc_now
from trustee_common.audit import AuditSink, running_audit_log
from trustee_common.errors import ConfigError, InvalidReferenceValueError, TrusteeError
from trustee_common.grpc_tls import WriteGuard, write_access
from trustee_common.logsetup import FORMAT_ENV, FORMATS, setup_logging
from trustee_common.metrics_http import serving_metrics
from trustee_common.serving import new_grpc_server, serve_grpc
from trustee_common.storage import open_kv_store
from trustee_pb import reference_pb2_grpc

logger = logging.getLogger("rvps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvps", description="Reference Value Provider Service (gRPC)")
    parser.add_argument("-c", "--config", type=Path, help="config file (TOML, or JSON by .json suffix)")
    parser.add_argument("-a", "--address", default=DEFAULT_ADDRESS, help=f"listen address (default {DEFAULT_ADDRESS})")
    parser.add_argument("--insecure-allow-writes", action="store_true",
                        help="allow reference-value writes from unauthenticated callers on a non-loopback --address "
                             "without mutual TLS (refused by default)")
    parser.add_argument("--log-format", choices=FORMATS, help=f"log line format (default: ${FORMAT_ENV}, else text)")
    return parser


async def load_initial_values(service: ReferenceValueService, path: Path) -> None:
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read reference values file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"reference values file {path} is not UTF-8 text") from None
    records = parse_values_file(text, str(path), utc_now())
    try:
        await service.store_records(records)
    except InvalidReferenceValueError as exc:
        raise ConfigError(f"reference values file {path}: {exc.detail}") from None
    logger.info("loaded %d reference value(s) from %s", len(records), path)


async def serve(config: RvpsConfig, address: str, *, insecure_allow_writes: bool = False) -> None:
    metrics = RvpsMetrics()
    async with running_audit_log(config.audit, on_failure=metrics.audit_write_failures.inc) as log:
        await _serve(config, address, metrics, AuditSink(log, "rvps"), insecure_allow_writes)


async def _serve(config: RvpsConfig, address: str, metrics: RvpsMetrics, audit: AuditSink, insecure_allow_writes: bool) -> None:
    guard = WriteGuard(write_access(address, config.tls, insecure_allow_writes=insecure_allow_writes), "RVPS")
    store = open_kv_store(config.storage)
    try:
        service = ReferenceValueService(store, limits=config.limits)
        if config.reference_values_path is not None:
            await load_initial_values(service, config.reference_values_path)
        purged = await service.purge_expired()
        if purged:
            logger.info("purged %d expired entries", purged)
        server = new_grpc_server(interceptors=[guard], metrics=metrics.rpc)
        reference_pb2_grpc.add_ReferenceValueProviderServiceServicer_to_server(ReferenceValueServicer(service, metrics, audit), server)
    except BaseException:
        await store.close()
        raise
    try:
        async with serving_metrics(config.metrics_address, metrics.registry, "RVPS"):
            await serve_grpc(server, address, "RVPS", [SERVICE_NAME], tls=config.tls, guard=guard)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(fmt=args.log_format, service="rvps")
    try:
        config = RvpsConfig.load(args.config)
        asyncio.run(serve(config, args.address, insecure_allow_writes=args.insecure_allow_writes))
    except TrusteeError as exc:
        print(f"rvps: error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
