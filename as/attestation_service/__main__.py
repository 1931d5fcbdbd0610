"""`grpc-as [-c|--config-file FILE] [-s|--socket 127.0.0.1:50004] [-t|--https-pubkey-cert PEM -k|--https-prikey PEM]
[--log-format text|json]`: the Attestation Service.

The composition root: reads the config and key material, opens the
store, picks the RVPS (built-in or remote), installs the default policies
and serves `attestation.AttestationService`, the RVPS proxy and
`grpc.health.v1` on one port until SIGTERM/SIGINT (exit 0), over TLS or
mutual TLS with `[tls]`; the write RPCs follow `grpc_tls.WriteGuard`
(refused on a non-loopback address without mutual TLS unless
`--insecure-allow-writes`), and `/metrics` over HTTP on `[metrics] address`
when configured. A bad config,
key file or address exits 1 with one line naming the problem.

With more than one worker (`--workers`, `$TRUSTEE_WORKERS`, top-level
`workers`, default: the available cores) this process checks the config and
the signing key, then supervises that many single-process services sharing
the port (`trustee_common.workers`); policy and reference-value changes made
through one worker reach the others within `appraisal_cache_ttl_seconds`.

`-t`/`-k` are upstream's flags for serving over TLS (both or neither); they
stand for a `[tls]` table with `certificate` and `private_key`, and may not be
combined with one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from attestation_service.appraisal_cache import InvalidatingProvider
from attestation_service.collateral import build_tdx_verifier
from attestation_service.config import DEFAULT_SOCKET, AsConfig, SignerFiles
from attestation_service.core.token import TokenSigner
from attestation_service.core.verifier import Verifier, default_verifiers
from attestation_service.grpc_server import SERVICE_NAME, AttestationServicer
from attestation_service.metrics import AsMetrics
from attestation_service.policy_store import PolicyStore
from attestation_service.restful import make_app as make_restful_app
from attestation_service.service import AttestationService
from attestation_service.snp_vcek import build_snp_verifier
from attestation_service.tpm_config import build_az_tdx_verifier, build_tpm_verifier
from rvps.client import RemoteReferenceValueProvider
from rvps.ports import ReferenceValueProvider
from rvps.server import SERVICE_NAME as RVPS_SERVICE_NAME
from rvps.server import ReferenceValueServicer
from rvps.service import ReferenceValueService
from trustee_common.addresses import parse_listen_address
from trustee_common.audit import AuditSink, running_audit_log
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.grpc_tls import WriteGuard, write_access
from trustee_common.heap import settle_heap
from trustee_common.http_serving import ConnectionLimits, runner_options, serve_bounded
from trustee_common.logsetup import FORMAT_ENV, FORMATS, setup_logging
from trustee_common.metrics_http import serving_metrics
from trustee_common.rego_pool import RegoPool
from trustee_common.serving import new_grpc_server, serve_grpc, stop_on_signal, wait_for_stop_signal
from trustee_common.storage import KeyValueStore, open_kv_store
from trustee_common.tls_config import ServerTls
from trustee_common.workers import WORKERS_ENV, in_worker, requested_workers, resolve_workers, run_workers
from trustee_pb import attestation_pb2_grpc, reference_pb2_grpc

logger = logging.getLogger("attestation_service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpc-as", description="CoCo Attestation Service (gRPC)")
    parser.add_argument("-c", "--config-file", "--config", dest="config", type=Path, help="config file (TOML, or JSON by .json suffix)")
    parser.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help=f"listen address (default {DEFAULT_SOCKET})")
    parser.add_argument("-t", "--https-pubkey-cert", type=Path, help="TLS certificate chain (PEM; with -k): serve over TLS")
    parser.add_argument("-k", "--https-prikey", type=Path, help="TLS private key (PEM; with -t)")
    parser.add_argument("--insecure-allow-writes", action="store_true",
                        help="allow policy and reference-value writes from unauthenticated callers on a non-loopback --socket "
                             "without mutual TLS (refused by default)")
    parser.add_argument("--log-format", choices=FORMATS, help=f"log line format (default: ${FORMAT_ENV}, else text)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"service processes sharing the port (default: ${WORKERS_ENV}, else the config's workers, "
                             "else the available cores; 1: this process serves)")
    return parser


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_signer(files: SignerFiles | None) -> TokenSigner:
    if files is None:
        logger.warning("no token signer configured: using an ephemeral P-256 key; tokens will have no x5c")
        return TokenSigner.ephemeral()
    chain = None if files.cert_path is None else _read(files.cert_path, "token certificate chain")
    signer = TokenSigner.from_pem(_read(files.key_path, "token signing key"), chain, files.cert_url)
    if not signer.has_chain:
        logger.warning("token signer has no certificate chain: tokens will have no x5c")
    return signer


def with_cli_tls(config: AsConfig, args: argparse.Namespace) -> AsConfig:
    """`config` with upstream's `-t/--https-pubkey-cert` and `-k/--https-prikey` as its `[tls]`."""
    cert, key = args.https_pubkey_cert, args.https_prikey
    if cert is None and key is None:
        return config
    if cert is None or key is None:
        raise ConfigError("-t/--https-pubkey-cert and -k/--https-prikey go together: give both to serve over TLS")
    if config.tls is not None:
        raise ConfigError("-t/-k and the config's [tls] table both set the TLS identity: give one")
    return replace(config, tls=ServerTls(cert, key))


def reference_value_provider(config: AsConfig, store: KeyValueStore) -> ReferenceValueProvider:
    if config.rvps.kind == "GrpcRemote":
        logger.info("reference values from the RVPS at %s", config.rvps.address)
        return RemoteReferenceValueProvider(config.rvps.address, tls=config.rvps.tls)
    if config.rvps.storage is not None:
        logger.info("reference values from the built-in RVPS (rvps_config.storage_type: %s)", config.rvps.storage.describe())
    else:
        logger.info("reference values from the built-in RVPS (this service's storage)")
    return ReferenceValueService(store, limits=config.rvps.limits)


def build_verifiers(config: AsConfig, store: KeyValueStore) -> dict[str, Verifier]:
    """Every TEE's verifier as `[verifier_config]` sets it up (also the KBS's embedded AS, `kbs.builtin_as`)."""
    verifiers = {**default_verifiers(), "tdx": build_tdx_verifier(config.dcap, store)}
    verifiers["tpm"] = build_tpm_verifier(config.tpm)
    verifiers["snp"] = build_snp_verifier(config.snp, store)
    verifiers["az-tdx-vtpm"] = build_az_tdx_verifier(config.dcap)
    return verifiers


async def serve(config: AsConfig, signer: TokenSigner, address: str, *, insecure_allow_writes: bool = False) -> None:
    metrics = AsMetrics()
    async with running_audit_log(config.audit, on_failure=metrics.audit_write_failures.inc) as log:
        await _serve(config, signer, address, metrics, AuditSink(log, "grpc-as"), insecure_allow_writes)


@contextlib.asynccontextmanager
async def opened_service(config: AsConfig, signer: TokenSigner, metrics: AsMetrics) -> AsyncIterator[tuple[AttestationService,
                                                                                                          ReferenceValueProvider]]:
    """The service with its store, RVPS and policy workers, default policies installed; closed when the block exits.

    Shared by `grpc-as` and `restful-as` (the two front ends upstream ships)."""
    store = open_kv_store(config.storage)
    rv_store = store if config.rvps.storage is None else open_kv_store(config.rvps.storage)
    provider = reference_value_provider(config, rv_store)
    engine = RegoPool.from_config(config.policy_engine)
    try:
        verifiers = build_verifiers(config, store)
        await engine.start()
        service = AttestationService(
            PolicyStore(store), provider, signer, config.token, verifiers, engine, verbose_token=config.verbose_token, metrics=metrics,
            cache_ttl=config.appraisal_cache_ttl_seconds,
        )
        await service.load_default_policies()
        yield service, provider
    finally:
        await engine.close()
        if isinstance(provider, RemoteReferenceValueProvider):
            await provider.close()
        if rv_store is not store:
            await rv_store.close()
        await store.close()


async def _serve(config: AsConfig, signer: TokenSigner, address: str, metrics: AsMetrics, audit: AuditSink,
                 insecure_allow_writes: bool) -> None:
    guard = WriteGuard(write_access(address, config.tls, insecure_allow_writes=insecure_allow_writes), "Attestation Service")
    async with opened_service(config, signer, metrics) as (service, provider):
        server = new_grpc_server(interceptors=[guard], metrics=metrics.rpc)
        attestation_pb2_grpc.add_AttestationServiceServicer_to_server(AttestationServicer(service, audit), server)
        # A remote RVPS audits its own writes; the built-in provider is audited here.
        rv_audit = audit if isinstance(provider, ReferenceValueService) else None
        proxied = InvalidatingProvider(provider, service.inputs)  # writes through the proxy apply here at once
        reference_pb2_grpc.add_ReferenceValueProviderServiceServicer_to_server(ReferenceValueServicer(proxied, audit=rv_audit), server)
        async with serving_metrics(config.metrics_address, metrics.registry, "Attestation Service"):
            await serve_grpc(server, address, "Attestation Service", [SERVICE_NAME, RVPS_SERVICE_NAME], tls=config.tls, guard=guard)


def _listen_addresses(config: AsConfig, socket: str) -> list[tuple[str, int]]:
    found = [parse_listen_address(socket, "listen address")]
    if config.metrics_address is not None:
        found.append(parse_listen_address(config.metrics_address, "metrics.address"))
    return [(host.strip("[]"), port) for host, port in found]


def run(config: AsConfig, args: argparse.Namespace, argv: list[str]) -> int:
    """Serve in this process, or supervise the workers."""
    memory = None
    if config.storage.storage_type == "Memory":
        memory = 'storage_backend.storage_type "Memory"'
    elif config.rvps.storage is not None and config.rvps.storage.storage_type == "Memory":
        memory = 'rvps_config.storage_type "Memory"'
    count = resolve_workers(requested_workers(args.workers, config.workers), process_local=memory)
    signer = load_signer(config.signer)
    if count == 1:
        asyncio.run(serve(config, signer, args.socket, insecure_allow_writes=args.insecure_allow_writes))
        return 0
    return run_workers("grpc-as", argv, count, _listen_addresses(config, args.socket))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    setup_logging(fmt=args.log_format, service="grpc-as")
    return _exit_status("grpc-as", lambda: run(with_cli_tls(AsConfig.load(args.config, quiet=in_worker()), args), args, argv))


def _exit_status(prog: str, body: Callable[[], int]) -> int:
    """`body()`'s status; a `TrusteeError` or `OSError` is one line on stderr and status 1; Ctrl-C is 0."""
    try:
        return body()
    except TrusteeError as exc:
        print(f"{prog}: error: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


# --- restful-as: upstream's RESTful front end over the same service -------------------------------------------------

#: `restful-as` serves attesting guests and operators: bounded like the KBS's defaults.
RESTFUL_LIMITS = ConnectionLimits(header_read_timeout=10.0, keep_alive_timeout=15.0, max_connections=1024)


def build_restful_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restful-as", description="CoCo Attestation Service (RESTful, upstream's restful-as API)")
    parser.add_argument("-s", "--socket", required=True, help="listen address host:port")
    parser.add_argument("-c", "--config-file", "--config", dest="config", type=Path, help="config file (TOML, or JSON by .json suffix)")
    parser.add_argument("-t", "--https-pubkey-cert", type=Path, help="TLS certificate chain (PEM; with -k): serve HTTPS")
    parser.add_argument("-k", "--https-prikey", type=Path, help="TLS private key (PEM; with -t)")
    parser.add_argument("-r", "--allowed_origin", "--allowed-origin", dest="allowed_origin", default="",
                        help="CORS: comma-separated origins allowed to call the API from a browser (* for any)")
    parser.add_argument("--insecure-allow-writes", action="store_true",
                        help="allow POST /policy from unauthenticated callers on a non-loopback --socket without mutual TLS")
    parser.add_argument("--log-format", choices=FORMATS, help=f"log line format (default: ${FORMAT_ENV}, else text)")
    return parser


def https_context(tls: ServerTls) -> ssl.SSLContext:
    """TLS 1.2+ with the `[tls]` identity; client certificates required when `client_ca` is set."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        if tls.client_ca is not None:
            context.load_verify_locations(tls.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the certificate, key or client CA: {exc}") from None
    return context


async def serve_restful(config: AsConfig, signer: TokenSigner, address: str, origins: frozenset[str], *,
                        insecure_allow_writes: bool = False) -> None:
    host, port = parse_listen_address(address, "--socket")
    access = write_access(address, config.tls, insecure_allow_writes=insecure_allow_writes)
    context = None if config.tls is None else https_context(config.tls)
    stop = stop_on_signal()
    metrics = AsMetrics()
    async with running_audit_log(config.audit, on_failure=metrics.audit_write_failures.inc) as log, \
            opened_service(config, signer, metrics) as (service, _):
        runner = web.AppRunner(make_restful_app(service, access, AuditSink(log, "restful-as"), origins), access_log=None,
                               **runner_options(RESTFUL_LIMITS))
        await runner.setup()
        try:
            try:
                async with serve_bounded(runner, [(host.strip("[]"), port)], RESTFUL_LIMITS, context), \
                        serving_metrics(config.metrics_address, metrics.registry, "Attestation Service"):
                    logger.info("restful-as listening on %s://%s (policy writes: %s)", "https" if context else "http", address,
                                access.name.lower())
                    settle_heap()
                    await wait_for_stop_signal(stop)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
        finally:
            await runner.cleanup()
    logger.info("restful-as stopped")


def restful_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_restful_parser().parse_args(argv)
    setup_logging(fmt=args.log_format, service="restful-as")

    def body() -> int:
        config = with_cli_tls(AsConfig.load(args.config), args)
        origins = frozenset(o.strip() for o in args.allowed_origin.split(",") if o.strip())
        if config.workers not in (None, 1):
            logger.warning("restful-as runs one process; the config's workers = %d is for grpc-as", config.workers)
        asyncio.run(serve_restful(config, load_signer(config.signer), args.socket, origins,
                                  insecure_allow_writes=args.insecure_allow_writes))
        return 0

    return _exit_status("restful-as", body)


if __name__ == "__main__":
    sys.exit(main())
