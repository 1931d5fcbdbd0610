"""Build the `tpm` and `az-tdx-vtpm` verifiers from the AS config (adapter: reads files).

`[verifier_config.tpm_verifier]`: `trusted_aks` files (PEM or DER
SubjectPublicKeyInfo, or a certificate whose key is the AK) become the
verifier's registered AKs; `ak_ca_certs` files (PEM, several certificates
allowed) are the AK/EK CAs an evidence `ak_cert_chain` may reach.
Upstream's `trusted_ak_keys_dir`: every regular file in it (names starting
with "." skipped; at most `max_trusted_ak_keys` files, each at most 64 KiB)
is read like a `trusted_aks` file; more files, a bigger file or a file that
is no public key or certificate is a `ConfigError` at start.
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

#: Largest file read from `trusted_ak_keys_dir` (a key or certificate is a few KiB).
MAX_AK_FILE_BYTES = 64 * 1024
DIR_KEY = "verifier_config.tpm_verifier.trusted_ak_keys_dir"


def _read(path: Path, what: str, limit: int | None = None) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read() if limit is None else file.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if limit is not None and len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


def load_ak(path: Path, where: str = "verifier_config.tpm_verifier.trusted_aks", limit: int | None = None) -> bytes:
    """DER SubjectPublicKeyInfo of an AK file (PEM/DER public key or certificate); `where` names the key in errors."""
    data = _read(path, f"{where} file", limit)
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
    raise ConfigError(f"{where}: {path} is not an RSA/EC public key or certificate")


def trusted_ak_dir_files(directory: Path, maximum: int) -> list[Path]:
    """The files of `trusted_ak_keys_dir`, sorted; more than `maximum` is a ConfigError."""
    found: list[Path] = []
    try:
        for entry in directory.iterdir():
            if entry.name.startswith(".") or not entry.is_file():
                continue
            found.append(entry)
            if len(found) > maximum:
                raise ConfigError(f"{DIR_KEY} {directory} holds more than max_trusted_ak_keys = {maximum} files")
    except OSError as exc:
        raise ConfigError(f"{DIR_KEY} {directory}: {exc.strerror}") from None
    return sorted(found)


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
    listed = [load_ak(p) for p in settings.trusted_aks]
    if settings.trusted_ak_keys_dir is not None:
        files = trusted_ak_dir_files(settings.trusted_ak_keys_dir, settings.max_trusted_ak_keys)
        listed += [load_ak(p, DIR_KEY, MAX_AK_FILE_BYTES) for p in files]
    trust = AkTrust(
        trusted_aks=frozenset(listed),
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
