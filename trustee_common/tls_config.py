"""TLS settings of the gRPC links (KBS -> AS -> RVPS), parsed from config tables.

Pure: tables in, frozen dataclasses out; no file is read here (the
adapter `trustee_common.grpc_tls` does). The key names (docs/grpc-tls.md)
mirror the KBS's `[http_server]` ones: `certificate`, `private_key`, plus
`client_ca` on a server and `ca_certificate` on a client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError


@dataclass(frozen=True)
class ServerTls:
    """`[tls]` of the AS and the RVPS: serve gRPC over TLS, optionally requiring client certificates."""

    certificate: Path
    private_key: Path
    #: CA whose client certificates are required (mutual TLS); None: no client certificate asked.
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class ClientTls:
    """How a gRPC client verifies its server (`ca_certificate`) and proves itself (`certificate` + `private_key`)."""

    ca_certificate: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None


def parse_server_tls(table: ConfigTable, where: str) -> ServerTls | None:
    """`[tls]`: certificate + private_key (both or neither), optional client_ca; finishes `table`."""
    cert = table.string("certificate")
    key = table.string("private_key")
    client_ca = table.string("client_ca")
    table.finish()
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(f"{where}.client_ca needs {where}.certificate and {where}.private_key (mutual TLS is TLS first)")
        return None
    if cert is None or key is None:
        raise ConfigError(f"{where}: certificate and private_key go together")
    return ServerTls(Path(cert), Path(key), None if client_ca is None else Path(client_ca))


def parse_client_tls(table: ConfigTable, where: str, *, tls: bool) -> ClientTls | None:
    """`ca_certificate`, `certificate`, `private_key` in a client table (not finished here).

    `tls` says whether the address asks for TLS (`https://`); TLS keys with a
    plain-text address are a contradiction, not something to ignore.
    """
    ca = table.string("ca_certificate")
    cert = table.string("certificate")
    key = table.string("private_key")
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: certificate and private_key go together")
    given = [k for k, v in (("ca_certificate", ca), ("certificate", cert), ("private_key", key)) if v is not None]
    if not tls:
        if given:
            raise ConfigError(f"{where}.{given[0]} needs an https:// address (TLS)")
        return None
    return ClientTls(*(None if v is None else Path(v) for v in (ca, cert, key)))


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals; wildcards and other names are not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
