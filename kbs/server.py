"""Composition root: build the KBS from a `KbsConfig`, serve it, stop cleanly on SIGTERM.

This is the only module that reads key and certificate files, opens the
storage and the AS channel, binds sockets and starts the background task
that purges expired sessions. Start-up problems are `ConfigError`s naming
the key at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from aiohttp.log import access_logger
from attestation_service.metrics import AsMetrics
from cryptography import x509

from kbs.as_client import GrpcAttestationService
from kbs.audit import KbsAudit
from kbs.builtin_as import BuiltinAttestationService, open_builtin
from kbs.config import (
    AdminConfig,
    ExternalPluginConfig,
    HttpServerConfig,
    IdentityProviderConfig,
    KbsConfig,
    Pkcs11PluginConfig,
    SocketAddress,
)
from kbs.core.admin import AdminAuthorizer, AdminMode, IdentityProvider, compile_acl
from kbs.core.admin_keys import VerificationKey, key_from_pem, keys_from_jwks
from kbs.core.ports import AttestationServicePort
from kbs.core.token import AttestationTokenVerifier, TokenTrust
from kbs.freshness import AppraisalEpochGuard
from kbs.http.app import make_app
from kbs.http.errors import malformed_http_response, raw_response
from kbs.http.state import KbsState
from kbs.https import server_context
from kbs.intel_ta import IntelTrustAuthority
from kbs.jwks import JwkSetSource
from kbs.metrics import KbsMetrics
from kbs.plugins.base import ClientPlugin
from kbs.protocol import RcarService
from kbs.reports import ReportSink, load_report_signer, running
from kbs.resources import AccessGate, PolicyStore, ResourceService
from trustee_common.audit import AuditLog
from trustee_common.errors import ConfigError, ServerBusyError
from trustee_common.heap import settle_heap
from trustee_common.http_serving import runner_options, serve_bounded
from trustee_common.metrics_http import serving_metrics
from trustee_common.rego_pool import RegoPool
from trustee_common.serving import stop_on_signal
from trustee_common.storage import KeyValueStore, ResourceStore, describe_sessions, open_kv_store, open_session_store
from trustee_common.storage.directory import DirectoryResourceStore
from trustee_common.storage.kv_resources import KvResourceStore
from trustee_common.workers import in_worker, notify_ready

logger = logging.getLogger(__name__)

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs request_id=%{X-Request-Id}o'
MAX_HEADER_FIELD_BYTES = 128 * 1024
PURGE_INTERVAL_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 3.0


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def default_policy_text() -> str:
    return importlib.resources.files("kbs").joinpath("policies/default.rego").read_text(encoding="utf-8")


def load_trust(config: KbsConfig) -> TokenTrust:
    token = config.attestation_token
    anchors: list[x509.Certificate] = []
    for path in token.trusted_certs_paths:
        try:
            anchors.extend(x509.load_pem_x509_certificates(_read(path, "attestation_token.trusted_certs_paths entry")))
        except ValueError:
            raise ConfigError(f"attestation_token.trusted_certs_paths: {path} holds no PEM certificate") from None
    if token.insecure_header_jwk:
        logger.warning("attestation_token.insecure_header_jwk = true: any self-signed attestation token is accepted (development only)")
    return TokenTrust(tuple(anchors), token.insecure_header_jwk, token.extra_teekey_paths)


def _identity_provider(config: IdentityProviderConfig, where: str) -> IdentityProvider:
    keys: list[VerificationKey] = []
    if config.public_key_path is not None:
        keys.append(key_from_pem(_read(config.public_key_path, f"{where}.public_key_uri"), f"{where}.public_key_uri"))
    if config.jwk_set_path is not None:
        keys.extend(keys_from_jwks(_read(config.jwk_set_path, f"{where}.jwk_set_uri"), f"{where}.jwk_set_uri"))
    return IdentityProvider(tuple(keys), config.issuer, config.audience)


def load_admin(config: AdminConfig) -> AdminAuthorizer:
    where = "admin.authentication.bearer_jwt.identity_providers"
    providers = tuple(_identity_provider(p, f"{where}[{i}]") for i, p in enumerate(config.identity_providers))
    acls = tuple(compile_acl(a.role, a.allowed_endpoints, "admin.authorization.regex_acl.acls", a.allowed_methods) for a in config.acls)
    if config.mode is AdminMode.ALLOW_ALL:
        logger.warning("admin.authorization_mode = InsecureAllowAll: the admin API is open to everyone")
    return AdminAuthorizer(config.mode, providers, acls)


def tls_context(http: HttpServerConfig) -> ssl.SSLContext | None:
    """The HTTPS context from the `tls_*` keys (`kbs.https`; default: TLS 1.3 only); None for plain HTTP."""
    if http.insecure_http:
        return None
    assert http.certificate is not None and http.private_key is not None
    context = server_context(http.tls, http.certificate, http.private_key)
    only13 = "; TLS 1.2 clients are refused (upstream's default profile is intermediate: set tls_profile = \"intermediate\" " \
        "for them)" if http.tls.min_version == "1.3" else ""
    logger.info("HTTPS: tls_profile %s, TLS %s to %s%s", http.tls.profile, http.tls.min_version, http.tls.max_version, only13)
    return context


def check_binds(http: HttpServerConfig, *, allow_insecure_bind: bool = False) -> None:
    """Plain HTTP on a non-loopback address: `insecure_http = true` is the consent (as upstream); one loud warning.

    `allow_insecure_bind` (the `--insecure-http` flag) is no longer needed and changes nothing. The
    supervisor and a single process warn; worker copies do not repeat it.
    """
    exposed = [str(s) for s in http.sockets if not s.loopback]
    if http.insecure_http and exposed and not in_worker():
        logger.warning(
            "INSECURE: the KBS serves plain HTTP (insecure_http = true) on non-loopback address(es) %s: tokens, secrets and "
            "admin credentials cross the network unencrypted; set certificate and private_key for HTTPS", ", ".join(exposed)
        )


def resource_store(config: KbsConfig, store: KeyValueStore) -> ResourceStore | None:
    plugin = config.resource_plugin
    if plugin is None:
        return None
    if plugin.dir_path is None:
        return KvResourceStore(store)
    return DirectoryResourceStore(plugin.dir_path)


def pkcs11_pin(config: Pkcs11PluginConfig) -> str:
    """The user PIN from `pin`, `pin_file` (one trailing newline dropped) or the variable `pin_env`; never logged."""
    if config.pin is not None:
        return config.pin
    if config.pin_file is not None:
        text = _read(config.pin_file, "plugins.pkcs11.pin_file").decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text
    assert config.pin_env is not None
    pin = os.environ.get(config.pin_env)
    if not pin:
        raise ConfigError(f"plugins.pkcs11.pin_env: the environment variable {config.pin_env} is not set or empty")
    return pin


async def open_plugins(config: KbsConfig, metrics: KbsMetrics, store: KeyValueStore | None = None) -> dict[str, ClientPlugin]:
    """The `kbs.plugins` plugins, each opened (HSM logged in, backends connected); a failure is a `ConfigError` naming it.

    `store`: the KBS's storage, for the plugins that keep data there (`provisioner`); None only for the start-up check."""
    from kbs.plugins.external import ExternalPlugin  # imported only when configured: grpc stubs, the PKCS#11 binding
    from kbs.plugins.pkcs11 import Pkcs11Plugin
    from kbs.plugins.provisioner import ProvisionerPlugin

    plugins: dict[str, ClientPlugin] = {}
    try:
        for plugin_config in config.plugins:
            if isinstance(plugin_config, Pkcs11PluginConfig):
                plugins["pkcs11"] = Pkcs11Plugin.open(plugin_config, pkcs11_pin(plugin_config))
            elif isinstance(plugin_config, ExternalPluginConfig):
                plugins["external"] = await ExternalPlugin.open(plugin_config, metrics)
            elif store is not None:
                plugins["provisioner"] = ProvisionerPlugin(store, plugin_config.key_length)
    except BaseException:
        await close_plugins(plugins)
        raise
    return plugins


def check_plugins(config: KbsConfig) -> None:
    """Before starting workers: open every plugin once and close it, so a wrong PIN is tried once (not once per
    worker: an HSM locks its user PIN after a few wrong tries) and an unreachable backend is reported once."""
    if not config.plugins:
        return

    async def check() -> None:
        await close_plugins(await open_plugins(config, KbsMetrics()))

    asyncio.run(check())


async def close_plugins(plugins: dict[str, ClientPlugin]) -> None:
    for plugin in plugins.values():
        try:
            await plugin.close()
        except Exception:
            logger.exception("closing the %s plugin failed", plugin.name)


def open_audit(config: KbsConfig, metrics: KbsMetrics) -> KbsAudit:
    settings = config.observability.audit
    if settings is None:
        return KbsAudit()
    logger.info("audit log: %s (fsync %s)", settings.path, settings.fsync)
    return KbsAudit(AuditLog(settings, on_failure=metrics.audit_write_failures.inc))


async def build_state(
    config: KbsConfig,
    store: KeyValueStore,
    attestation: AttestationServicePort,
    engine: RegoPool,
    sessions: KeyValueStore | None = None,
    audit: KbsAudit | None = None,
    metrics: KbsMetrics | None = None,
    plugins: dict[str, ClientPlugin] | None = None,
) -> KbsState:
    metrics = metrics or KbsMetrics()
    metrics.watch_policy_engine(engine)
    audit = audit or open_audit(config, metrics)
    trust = load_trust(config)
    if isinstance(attestation, BuiltinAttestationService):  # the embedded AS's tokens: trusted by key, in process
        trust = replace(trust, trusted_keys=(*trust.trusted_keys, attestation.signing_key))
    sources = await jwk_set_sources(config, attestation)
    trust = replace(trust, jwk_sets=tuple(s.ring for s in sources))
    verifier = AttestationTokenVerifier(trust)
    if sources:
        verifier.refresh = refresher(sources)
    policies = PolicyStore(store, engine)
    await policies.install_default(default_policy_text())
    repository = resource_store(config, store)
    freshness = AppraisalEpochGuard(attestation.appraisal_epoch, metrics, ttl=config.attestation_service.appraisal_epoch_ttl_seconds)
    resources = None if repository is None else ResourceService(repository, policies, verifier, freshness, metrics, audit=audit)
    lifetime = config.attestation_service.session_lifetime_seconds
    reports = report_sink(config, store, attestation, metrics)
    plugins = plugins or {}
    gate = AccessGate(policies, verifier, freshness, metrics) if plugins else None
    challenge = attestation.challenge_params if isinstance(attestation, IntelTrustAuthority) else None
    rcar = RcarService(store if sessions is None else sessions, attestation, metrics, lifetime=lifetime, audit=audit,
                       verifier=verifier if resources is not None or plugins else None, reports=reports, challenge_params=challenge)
    return KbsState(rcar, resources, policies, load_admin(config.admin), attestation, metrics, config.http_server.payload_request_size,
                    audit=audit, metrics_on_main=config.observability.metrics_address is None,
                    max_in_flight_requests=config.http_server.max_in_flight_requests,
                    retry_after_seconds=config.http_server.retry_after_seconds,
                    target_latency_seconds=config.http_server.admission_target_latency_ms / 1000,
                    sample_plugin=config.sample_plugin is not None, reports=reports,
                    report_store=None if reports is None else store, plugins=plugins, plugin_gate=gate)


async def jwk_set_sources(config: KbsConfig, attestation: AttestationServicePort) -> list[JwkSetSource]:
    """`trusted_jwk_sets` (loaded here; `ConfigError` if unreadable) and ITA's `certs_file` (loaded by its backend)."""
    token = config.attestation_token
    sources: list[JwkSetSource] = []
    if token.trusted_jwk_sets:
        source = JwkSetSource(token.trusted_jwk_sets, "attestation_token.trusted_jwk_sets",
                              min_refresh_seconds=token.jwks_refresh_interval_seconds)
        await source.load()
        sources.append(source)
    if isinstance(attestation, IntelTrustAuthority):
        sources.append(attestation.jwks)
    return sources


def refresher(sources: list[JwkSetSource]) -> Callable[[], Awaitable[None]]:
    """One bounded refresh of every source (each keeps its own bound)."""
    async def refresh() -> None:
        for source in sources:
            await source.refresh()
    return refresh


def report_sink(config: KbsConfig, store: KeyValueStore, attestation: AttestationServicePort, metrics: KbsMetrics) -> ReportSink | None:
    """`[attestation_reports]`: reports signed with the configured AS key, else the embedded AS's; in the main store."""
    settings = config.attestation_reports
    if not settings.enabled:
        return None
    builtin = attestation.token_signer if isinstance(attestation, BuiltinAttestationService) else None
    signer = load_report_signer(settings, builtin)
    logger.info("attestation reports: kept %g days in namespace kbs_attestation_report", settings.retention_days)
    return ReportSink(store, signer, metrics, retention_seconds=settings.retention_days * 86400.0, queue_size=settings.queue_size)


async def open_attestation(config: KbsConfig, store: KeyValueStore, engine: RegoPool, metrics: KbsMetrics) -> AttestationServicePort:
    """The AS at `as_addr` (gRPC), the one embedded in this process (`coco_as_builtin`, its metrics on the KBS's), or
    Intel Trust Authority (`intel_ta`, its JWK set loaded before the KBS serves)."""
    builtin = config.attestation_service.builtin
    ita = config.attestation_service.intel_ta
    if ita is not None:
        backend = IntelTrustAuthority(ita)
        try:
            await backend.start()
        except BaseException:
            await backend.close()
            raise
        return backend
    if builtin is None:
        return GrpcAttestationService(config.attestation_service.as_addr, tls=config.attestation_service.tls)
    return await open_builtin(builtin, config.storage, store, engine, AsMetrics(metrics.registry))


async def purge_sessions(rcar: RcarService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            purged = await rcar.purge_expired()
        except Exception:
            logger.exception("purging expired sessions failed")
            continue
        if purged:
            logger.debug("purged %d expired entries", purged)


def connection_refusal(http: HttpServerConfig) -> bytes:
    """The 503 `ServerBusy` (with `Retry-After`) a connection above `max_connections` gets before it is closed."""
    detail = (f"the KBS is at its limit of {http.limits.max_connections} connections; "
              f"retry after {http.retry_after_seconds} s")
    return raw_response(ServerBusyError(detail, retry_after=http.retry_after_seconds))


@contextlib.asynccontextmanager
async def running_site(app: web.Application, config: KbsConfig, context: ssl.SSLContext | None) -> AsyncIterator[None]:
    http = config.http_server
    runner = web.AppRunner(
        app,
        access_log=access_logger if config.observability.access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        max_field_size=MAX_HEADER_FIELD_BYTES,
        **runner_options(http.limits),
    )
    await runner.setup()
    try:
        binds = [(s.host, s.port) for s in http.sockets]
        async with serve_bounded(runner, binds, http.limits, context, malformed=malformed_http_response, busy=connection_refusal(http)):
            for socket in http.sockets:
                logger.info("KBS listening on %s://%s", "http" if context is None else "https", socket)
            yield
    finally:
        await runner.cleanup()


def metrics_site(state: KbsState, address: SocketAddress | None) -> contextlib.AbstractAsyncContextManager[None]:
    """`/metrics` alone on `address` (plain HTTP, bounded connections), when configured."""
    return serving_metrics(None if address is None else str(address), state.metrics.registry, "KBS")


async def serve(config: KbsConfig, *, allow_insecure_bind: bool = False) -> None:
    """Run until SIGTERM or SIGINT."""
    check_binds(config.http_server, allow_insecure_bind=allow_insecure_bind)
    context = tls_context(config.http_server)
    store = open_kv_store(config.storage)
    session_config = config.session_storage or config.storage
    # SQLite sessions get their own fsync-free file; Memory/Postgres without `session_storage_type` share `store`.
    separate = config.session_storage is not None or session_config.storage_type == "Sqlite"
    sessions = open_session_store(session_config) if separate else None
    logger.info("storage: %s; sessions: %s", config.storage.describe(), describe_sessions(session_config))
    engine = RegoPool.from_config(config.policy_engine)
    metrics = KbsMetrics()
    attestation: AttestationServicePort | None = None
    plugins: dict[str, ClientPlugin] = {}
    stop = stop_on_signal()
    try:
        await engine.start()
        attestation = await open_attestation(config, store, engine, metrics)
        plugins = await open_plugins(config, metrics, store)
        state = await build_state(config, store, attestation, engine, sessions, metrics=metrics, plugins=plugins)
        await state.rcar.purge_expired()  # also fails start-up early when a session server does not answer
        if sessions is not None:
            await store.purge_expired()  # sessions an earlier version (or `trustee migrate`) left in the main store
        interval = min(PURGE_INTERVAL_SECONDS, max(1.0, config.attestation_service.session_lifetime_seconds))
        tasks = [asyncio.create_task(purge_sessions(state.rcar, interval))]
        if state.audit.log is not None:
            tasks.append(asyncio.create_task(state.audit.log.run_syncer()))
        try:
            async with running(state.reports), metrics_site(state, config.observability.metrics_address), \
                    running_site(make_app(state), config, context):
                settle_heap()
                notify_ready()
                await stop.wait()
                logger.info("stopping")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if state.audit.log is not None:
                state.audit.log.close()
    finally:
        await close_plugins(plugins)
        if attestation is not None:
            await attestation.close()
        await engine.close()
        if sessions is not None:
            await sessions.close()
        await store.close()
