"""gRPC adapter for TLS: credentials from `tls_config` settings, client channels, and the write guard.

Reads the PEM files named by `ServerTls` / `ClientTls` (a missing or
unreadable file is a `ConfigError` naming the key). `WriteGuard` is the
server interceptor that keeps the write RPCs (policy and reference-value
changes) for authenticated callers (docs/grpc-tls.md):

* the service listens on loopback only: writes are allowed (as before);
* mutual TLS (`[tls] client_ca`): every caller holds a client certificate
  from that CA, and writes are allowed to each of them;
* otherwise (a non-loopback address without mutual TLS) writes are refused
  with `AdminForbiddenError` (PERMISSION_DENIED, variant AdminAuthAccess),
  unless the operator started the service with `--insecure-allow-writes`.

Read RPCs (attestation, queries, listings) are never restricted here.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustee_common.addresses import GrpcEndpoint, parse_listen_address
from trustee_common.errors import AdminForbiddenError, ConfigError
from trustee_common.grpc_errors import abort_with
from trustee_common.tls_config import ClientTls, ServerTls, is_loopback_host

logger = logging.getLogger(__name__)

#: Full gRPC method names that change state; the RVPS proxy on the AS port has the same names.
WRITE_METHODS = frozenset(
    {
        "/attestation.AttestationService/SetAttestationPolicy",
        "/attestation.AttestationService/DeletePolicy",
        "/reference.ReferenceValueProviderService/RegisterReferenceValue",
        "/reference.ReferenceValueProviderService/DeleteReferenceValue",
    }
)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _pem(path: Path, what: str, marker: bytes) -> bytes:
    data = _read(path, what)
    if b"-----BEGIN " not in data or marker not in data:
        raise ConfigError(f"{what} {path} is not a PEM {marker.decode().strip()}")
    return data


def _cert(path: Path, what: str) -> bytes:
    return _pem(path, what, b"CERTIFICATE")


def _key(path: Path, what: str) -> bytes:
    return _pem(path, what, b"PRIVATE KEY")


def _pair(cert_path: Path, key_path: Path, where: str) -> tuple[bytes, bytes]:
    """(chain PEM, key PEM), checked to parse and to belong together (grpc would only say "failed to bind")."""
    chain, key = _cert(cert_path, f"{where}.certificate"), _key(key_path, f"{where}.private_key")
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError as exc:
        raise ConfigError(f"{where}.certificate {cert_path} is not a PEM certificate: {exc}") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}.private_key {key_path} is not an unencrypted PEM private key: {exc}") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(f"{where}.private_key {key_path} does not belong to {where}.certificate {cert_path}")
    return chain, key


def server_credentials(tls: ServerTls, where: str) -> grpc.ServerCredentials:
    """TLS server credentials; with `client_ca`, a verified client certificate is required."""
    chain, key = _pair(tls.certificate, tls.private_key, where)
    client_ca = None if tls.client_ca is None else _cert(tls.client_ca, f"{where}.client_ca")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def channel_credentials(tls: ClientTls, where: str) -> grpc.ChannelCredentials:
    """Client credentials: `ca_certificate` (None: system roots) and an optional client certificate."""
    ca = None if tls.ca_certificate is None else _cert(tls.ca_certificate, f"{where}.ca_certificate")
    chain, key = None, None
    if tls.certificate is not None and tls.private_key is not None:
        chain, key = _pair(tls.certificate, tls.private_key, where)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def client_channel(
    endpoint: GrpcEndpoint, tls: ClientTls | None, where: str, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel to `endpoint`: TLS when the address says https:// (with `tls`'s files, if any)."""
    if not endpoint.tls:
        return grpc.aio.insecure_channel(endpoint.target, options=list(options))
    credentials = channel_credentials(tls or ClientTls(), where)
    return grpc.aio.secure_channel(endpoint.target, credentials, options=list(options))


class WriteAccess(enum.Enum):
    LOOPBACK = "loopback"
    MUTUAL_TLS = "mutual-tls"
    INSECURE = "insecure"
    REFUSED = "refused"


def write_access(address: str, tls: ServerTls | None, *, insecure_allow_writes: bool) -> WriteAccess:
    """Who may call the write RPCs of a service listening on `address` (see the module docstring)."""
    if tls is not None and tls.mutual:
        return WriteAccess.MUTUAL_TLS
    host, _ = parse_listen_address(address, "listen address")
    if is_loopback_host(host):
        return WriteAccess.LOOPBACK
    return WriteAccess.INSECURE if insecure_allow_writes else WriteAccess.REFUSED


def write_refusal(access: WriteAccess, service: str, identity: str | None, what: str = "write calls") -> AdminForbiddenError | None:
    """Why a write by a caller with client-certificate `identity` (None: none) is refused under `access`; None: allowed.

    The one rule of every transport (the gRPC `WriteGuard`, `restful-as`'s `POST /policy`)."""
    if access in (WriteAccess.LOOPBACK, WriteAccess.INSECURE):
        return None
    if access is WriteAccess.MUTUAL_TLS:
        if identity is not None:
            logger.info("write call by client certificate %r", identity)
            return None
        return AdminForbiddenError(f"{service}: {what} need a client certificate (mutual TLS)")
    return AdminForbiddenError(
        f"{service}: {what} are refused: the service listens on a non-loopback address without mutual TLS "
        "([tls] client_ca), so callers are not authenticated"
    )


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The verified client certificate's common name (or first SAN), None without one."""
    for key in ("x509_common_name", "x509_subject_alternative_name", "x509_pem_cert"):
        values = list(auth_context.get(key) or [])
        if values:
            return values[0].decode("utf-8", errors="replace") if key != "x509_pem_cert" else "(certificate without names)"
    return None


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class WriteGuard(grpc.aio.ServerInterceptor):
    """Refuses the `WRITE_METHODS` to callers that `access` does not allow."""

    def __init__(self, access: WriteAccess, service: str) -> None:
        self.access = access
        self._service = service

    def _refusal(self, context: grpc.aio.ServicerContext[Any, Any]) -> AdminForbiddenError | None:
        identity = peer_identity(context.auth_context()) if self.access is WriteAccess.MUTUAL_TLS else None
        return write_refusal(self.access, self._service, identity)

    def _guarded(self, inner: Handler) -> Handler:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            refusal = self._refusal(context)
            if refusal is not None:
                logger.warning("refused a write call from %s: %s", context.peer(), refusal.detail)
                await abort_with(context, refusal)
            return await inner(request, context)

        return guarded

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = getattr(handler_call_details, "method", "")
        if handler is None or method not in WRITE_METHODS or handler.unary_unary is None:
            return handler
        inner: Handler = handler.unary_unary  # type: ignore[assignment]  # grpc.aio handlers are coroutines
        return grpc.unary_unary_rpc_method_handler(
            self._guarded(inner),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
