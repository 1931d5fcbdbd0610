"""Key material for token signing: a local CA and the AS signing certificate.

`trustee run` creates a local CA (EC P-256) and an AS token-signing key with
a certificate issued by it; the AS embeds the chain as `x5c` and the KBS
trusts the CA (`[attestation_token] trusted_certs_paths`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=825)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pytrustee"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pem_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str, now: datetime.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    now: datetime.datetime | None = None,
    *,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 key and an end-entity certificate for it, signed by the CA."""
    import ipaddress

    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if dns_names or ip_addresses:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class TokenSigningFiles:
    ca_key: Path
    ca_cert: Path
    token_key: Path
    token_cert_chain: Path


def ensure_token_signing_material(directory: Path) -> TokenSigningFiles:
    """Create (once) the CA and AS signing key under `directory`; reuse them after."""
    files = TokenSigningFiles(directory / "ca.key", directory / "ca.pem", directory / "token.key", directory / "token-cert-chain.pem")
    if all(p.exists() for p in (files.ca_key, files.ca_cert, files.token_key, files.token_cert_chain)):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca("pytrustee local token CA")
    leaf_key, leaf_cert = issue_leaf(ca_key, ca_cert, "pytrustee attestation service")
    _write_private(files.ca_key, pem_private_key(ca_key))
    files.ca_cert.write_bytes(pem_cert(ca_cert))
    _write_private(files.token_key, pem_private_key(leaf_key))
    files.token_cert_chain.write_bytes(pem_cert(leaf_cert) + pem_cert(ca_cert))
    return files


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
