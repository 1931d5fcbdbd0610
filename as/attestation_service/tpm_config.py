"""Build the `tpm` and `az-tdx-vtpm` verifiers from the AS config (adapter: reads files).

`[verifier_config.tpm_verifier]`: `trusted_aks` files (PEM or DER
SubjectPublicKeyInfo, or a certificate whose key is the AK) become the
verifier's registered AKs; `ak_ca_certs` files (PEM, several certificates
allowed) are the AK/EK CAs an evidence `ak_cert_chain` may reach.
`az-tdx-vtpm` uses the offline DCAP bundles of `[verifier_config.dcap_verifier]`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation_service.collateral import load_collateral
from attestation_service.config import DcapSettings, TpmSettings
from attestation_service.core.verifiers.azure import AzTdxVtpmVerifier
from attestation_service.core.verifiers.tdx import TdxCollateral
from attestation_service.core.verifiers.tpm import AkTrust, TpmVerifier
from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_ak(path: Path) -> bytes:
    """DER SubjectPublicKeyInfo of an AK file (PEM/DER public key or certificate)."""
    data = _read(path, "verifier_config.tpm_verifier.trusted_aks file")
    key: object = None
    for attempt in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = attempt(data)
            break
        except (ValueError, TypeError):
            continue
    for cert_loader in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        if key is not None:
            break
        try:
            key = cert_loader(data).public_key()
        except (ValueError, TypeError):
            continue
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raise ConfigError(f"verifier_config.tpm_verifier.trusted_aks: {path} is not an RSA/EC public key or certificate")


def load_ca_certs(path: Path) -> list[x509.Certificate]:
    data = _read(path, "verifier_config.tpm_verifier.ak_ca_certs file")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise ConfigError(f"verifier_config.tpm_verifier.ak_ca_certs: {path} holds no certificate") from None


def build_tpm_verifier(settings: TpmSettings | None) -> TpmVerifier:
    if settings is None:
        return TpmVerifier()
    trust = AkTrust(
        trusted_aks=frozenset(load_ak(p) for p in settings.trusted_aks),
        ca_certs=tuple(c for p in settings.ak_ca_certs for c in load_ca_certs(p)),
    )
    logger.info("tpm verifier: %d trusted AK(s), %d AK/EK CA certificate(s)", len(trust.trusted_aks), len(trust.ca_certs))
    return TpmVerifier(trust)


def build_az_tdx_verifier(settings: DcapSettings | None) -> AzTdxVtpmVerifier:
    if settings is None or settings.collateral_dir is None:
        return AzTdxVtpmVerifier()
    bundles = load_collateral(settings.collateral_dir)

    def lookup(fmspc: str, kind: str) -> TdxCollateral | None:
        return bundles.get((fmspc, kind))

    return AzTdxVtpmVerifier(lookup)
