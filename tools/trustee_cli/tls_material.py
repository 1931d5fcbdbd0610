"""`trustee run --tls`: a local TLS CA and the certificates of every link, created once and reused.

Under `<data dir>/tls/` (docs/architecture.md): `ca.pem`/`ca.key`, server
certificates `kbs`, `as`, `rvps` and client certificates `kbs-client`
(KBS -> AS) and `as-client` (AS -> RVPS), each as `<name>.pem` (leaf then
CA) and `<name>.key` (0600). A certificate is issued again, with the same
CA, when it is missing, was not issued by the current CA, lacks a name it
now needs (e.g. a new `--host`) or has less than `RENEW_BEFORE` left.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustee_cli.configs import ServerPaths
from trustee_common.errors import ConfigError
from trustee_common.pki import issue_leaf, make_ca, pem_cert, pem_private_key

logger = logging.getLogger(__name__)

RENEW_BEFORE = datetime.timedelta(days=30)
LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")
#: The internal services listen on loopback only.
INTERNAL_SERVERS = ("as", "rvps")
CLIENTS = {"kbs-client": "kbs", "as-client": "attestation-service"}
#: `(path, data)`: writes an owner-only (0600) file.
WritePrivate = Callable[[Path, bytes], None]


@dataclass(frozen=True)
class Leaf:
    name: str
    common_name: str
    #: DNS names and IP literals the certificate must carry (none for client certificates).
    names: tuple[str, ...] = ()


def kbs_names(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The KBS certificate's names: the listen address (unless a wildcard), loopback, `localhost`, then `extra`."""
    names = list(LOCAL_NAMES)
    if host not in ("0.0.0.0", "::", ""):  # noqa: S104 - names, not binds
        names.insert(0, host)
    names += extra
    return tuple(dict.fromkeys(names))


def _split(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ips, dns = [], []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return tuple(dns), tuple(ips)


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _still_good(leaf: Leaf, cert_path: Path, key_path: Path, ca: x509.Certificate, now: datetime.datetime) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, IndexError, InvalidSignature):
        return False
    dns, ips = _split(leaf.names)
    return set(dns) | set(ips) <= _san_names(cert) and cert.not_valid_after_utc - now > RENEW_BEFORE


def _load_or_make_ca(tls_dir: Path, write_private: WritePrivate) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = tls_dir / "ca.key", tls_dir / "ca.pem"
    if key_path.exists() and cert_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{tls_dir}: ca.key/ca.pem are not a PEM key and certificate: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an EC private key")
        return key, cert
    key, cert = make_ca("pytrustee local TLS CA")
    write_private(key_path, pem_private_key(key))
    cert_path.write_bytes(pem_cert(cert))
    logger.info("created the local TLS CA %s", cert_path)
    return key, cert


def leaves(host: str, extra_names: tuple[str, ...]) -> list[Leaf]:
    servers = [Leaf("kbs", "kbs", kbs_names(host, extra_names))]
    servers += [Leaf(name, name, LOCAL_NAMES) for name in INTERNAL_SERVERS]
    return servers + [Leaf(name, cn) for name, cn in CLIENTS.items()]


def ensure_service_tls(paths: ServerPaths, host: str, extra_names: tuple[str, ...], write_private: WritePrivate) -> None:
    """Create or reuse the CA and every certificate under `paths.tls_dir`."""
    paths.tls_dir.mkdir(mode=0o700, exist_ok=True)
    ca_key, ca = _load_or_make_ca(paths.tls_dir, write_private)
    now = datetime.datetime.now(datetime.UTC)
    for leaf in leaves(host, extra_names):
        cert_path, key_path = paths.tls_cert(leaf.name), paths.tls_key(leaf.name)
        if _still_good(leaf, cert_path, key_path, ca, now):
            continue
        dns, ips = _split(leaf.names)
        key, cert = issue_leaf(ca_key, ca, leaf.common_name, now, dns_names=dns, ip_addresses=ips)
        write_private(key_path, pem_private_key(key))
        cert_path.write_bytes(pem_cert(cert) + pem_cert(ca))
        logger.info("issued the TLS certificate %s", cert_path)
