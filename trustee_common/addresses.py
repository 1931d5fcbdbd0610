"""Listen addresses and gRPC targets, parsed once for every component.

Pure. Accepted forms: `host:port`, `[v6addr]:port`; for gRPC targets also
`http://host:port` (upstream configs write the scheme), `https://host:port`
(TLS) and `unix:<path>`. Errors are `ConfigError`s naming the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from trustee_common.errors import ConfigError


def parse_listen_address(text: str, field: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{field}: {text!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{field}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{field}: {host!r} is not an IPv6 address") from None
        return host[1:-1], port
    if ":" in host or any(c.isspace() for c in host):
        raise ConfigError(f"{field}: {text!r} is not host:port (write IPv6 hosts as [addr]:port)")
    return host, port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class GrpcEndpoint:
    """Where a gRPC client connects: `target` for grpc, and whether to use TLS."""

    target: str
    tls: bool = False


def grpc_endpoint(text: str, field: str) -> GrpcEndpoint:
    """Parse `host:port`, `http://host:port`, `https://host:port` or `unix:<path>`."""
    value = text.strip()
    if value.startswith("unix:"):
        return GrpcEndpoint(value)
    tls = False
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"{field}: {text!r} must be host:port, http://host:port or https://host:port")
        value, tls = parts.netloc, parts.scheme == "https"
    host, port = parse_listen_address(value, field)
    return GrpcEndpoint(join_host_port(host, port), tls)


def grpc_target(text: str, field: str) -> str:
    """A plain-text gRPC target; `https://` is refused here (use `grpc_endpoint`)."""
    endpoint = grpc_endpoint(text, field)
    if endpoint.tls:
        raise ConfigError(f"{field}: TLS (https://) is not supported for {text!r}")
    return endpoint.target
