"""AMD certificates for SEV-SNP (evidence.md 3.2): pinned ARKs, RSA-PSS chain checks, VCEK/VLEK extensions.

The ARK, ASK and ASVK of Milan, Genoa and Turin ship as package data
(`amd/<product>_ask_ark_asvk.pem`, public) and each ARK must have its pinned
SHA-256 fingerprint. Every AMD certificate (ASK/ASVK, VCEK/VLEK, and the KDS
CRL) is checked with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48, exactly,
rather than with whatever parameters the certificate names. VCEKs have serial
number 0, which `cryptography` still loads with a deprecation warning; that
warning is silenced here only. Pure: no I/O except reading package data.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from trustee_common.errors import EvidenceError
from trustee_common.lru import BoundedLru

PRODUCTS = ("Milan", "Genoa", "Turin")
PINNED_ARK_SHA256 = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
AMD_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = f"{AMD_OID}.1"
OID_PRODUCT_NAME = f"{AMD_OID}.2"
OID_BL_SPL, OID_TEE_SPL, OID_SNP_SPL, OID_UCODE_SPL, OID_FMC_SPL = (f"{AMD_OID}.3.{n}" for n in (1, 2, 3, 8, 9))
OID_HWID = f"{AMD_OID}.4"
OID_CSP_ID = f"{AMD_OID}.5"
HWID_SIZE = 64
TURIN_HWID_SIZE = 8
PSS_SALT = 48
AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT)


class CertificateFormatError(EvidenceError):
    """A certificate, CRL or AMD extension cannot be decoded."""


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """One DER or PEM certificate (serial number 0 accepted, as on every VCEK)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except ValueError:
            raise CertificateFormatError(f"{what}: not a DER or PEM X.509 certificate") from None


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, or the one DER certificate."""
    if data.lstrip().startswith(b"-----BEGIN"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return x509.load_pem_x509_certificates(data)
            except ValueError:
                raise CertificateFormatError(f"{what}: not a PEM certificate bundle") from None
    return [load_certificate(data, what)]


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def common_name(cert: x509.Certificate) -> str:
    return " ".join(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))


def pss_signed_by(signature: bytes, data: bytes, issuer: x509.Certificate) -> bool:
    """True when `signature` over `data` verifies with the issuer's RSA key under AMD's PSS parameters."""
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, data, AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return cert.issuer == issuer.subject and pss_signed_by(cert.signature, cert.tbs_certificate_bytes, issuer)


#: (certificate, issuer) pairs whose signature verified, by the SHA-256 of both DER encodings (`fingerprint`). A signature
#: depends only on those bytes, so an entry never goes stale; validity periods and revocation depend on the
#: report's time and CRLs and are checked on every report. A chip's reports all carry its one VCEK (or its
#: VLEK): the RSA-PSS check of the VEK by the ASK (or ASVK) is done once per chip. Failures are not kept.
SIGNED_LINKS: BoundedLru[tuple[str, str], bool] = BoundedLru(1024)


def signed_link(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issued_by`, remembered when true (`SIGNED_LINKS`)."""
    key = (fingerprint(cert), fingerprint(issuer))
    if SIGNED_LINKS.get(key):
        return True
    if not issued_by(cert, issuer):
        return False
    SIGNED_LINKS.put(key, True)
    return True


@dataclass(frozen=True, slots=True)
class AmdRoots:
    """One product's ARK and its two intermediates (ASK signs VCEKs, ASVK signs VLEKs)."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate


@cache
def amd_roots() -> dict[str, AmdRoots]:
    """The shipped AMD chains by product: each ARK pinned and self-signed, ASK and ASVK signed by it (verified once)."""
    found: dict[str, AmdRoots] = {}
    for product in PRODUCTS:
        data = resources.files(__package__).joinpath("amd", f"{product.lower()}_ask_ark_asvk.pem").read_bytes()
        by_name = {common_name(c): c for c in load_certificates(data, f"{product} AMD chain")}
        ark = by_name[f"ARK-{product}"]
        if fingerprint(ark) != PINNED_ARK_SHA256[product]:
            raise CertificateFormatError(f"shipped ARK-{product} does not have the pinned fingerprint")
        roots = AmdRoots(product, ark, by_name[f"SEV-{product}"], by_name[f"SEV-VLEK-{product}"])
        if not (issued_by(ark, ark) and issued_by(roots.ask, ark) and issued_by(roots.asvk, ark)):
            raise CertificateFormatError(f"shipped AMD {product} chain does not verify")  # checked once, not per report
        found[product] = roots
    return found


# --- VCEK / VLEK extensions ----------------------------------------------------------------


def _der_value(data: bytes, tag: int, what: str) -> bytes:
    if len(data) < 2 or data[0] != tag:
        raise CertificateFormatError(f"{what}: expected DER tag {tag:#04x}")
    length, at = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 2 or len(data) < 2 + count:
            raise CertificateFormatError(f"{what}: bad DER length")
        length, at = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if len(data) != at + length:
        raise CertificateFormatError(f"{what}: DER length {length} does not match the {len(data) - at} bytes present")
    return data[at:]


def _raw_extension(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _int_extension(cert: x509.Certificate, oid: str) -> int | None:
    raw = _raw_extension(cert, oid)
    if raw is None:
        return None
    value = _der_value(raw, 0x02, f"extension {oid}")
    if not value:
        raise CertificateFormatError(f"extension {oid}: empty INTEGER")
    return int.from_bytes(value, "big", signed=True)


def decode_hwid(raw: bytes) -> bytes:
    """The hwID extension: raw 64 (or Turin's 8) bytes, or a DER OCTET STRING holding them."""
    if len(raw) in (HWID_SIZE, TURIN_HWID_SIZE):
        return raw
    return _der_value(raw, 0x04, f"extension {OID_HWID} (hwID)")


@dataclass(frozen=True, slots=True)
class VekExtensions:
    struct_version: int | None
    product_name: str | None
    bootloader: int | None
    tee: int | None
    snp: int | None
    microcode: int | None
    fmc: int | None
    hwid: bytes | None
    csp_id: str | None

    @property
    def product(self) -> str | None:
        """`Milan` for `Milan-B0` etc."""
        return None if self.product_name is None else self.product_name.split("-")[0]


def vek_extensions(cert: x509.Certificate) -> VekExtensions:
    try:
        name_raw = _raw_extension(cert, OID_PRODUCT_NAME)
        csp_raw = _raw_extension(cert, OID_CSP_ID)
        hwid_raw = _raw_extension(cert, OID_HWID)
        return VekExtensions(
            struct_version=_int_extension(cert, OID_STRUCT_VERSION),
            product_name=None if name_raw is None else _der_value(name_raw, 0x16, "productName").decode("ascii"),
            bootloader=_int_extension(cert, OID_BL_SPL),
            tee=_int_extension(cert, OID_TEE_SPL),
            snp=_int_extension(cert, OID_SNP_SPL),
            microcode=_int_extension(cert, OID_UCODE_SPL),
            fmc=_int_extension(cert, OID_FMC_SPL),
            hwid=None if hwid_raw is None else decode_hwid(hwid_raw),
            csp_id=None if csp_raw is None else _der_value(csp_raw, 0x16, "cspID").decode("ascii", "replace"),
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise CertificateFormatError(f"VCEK/VLEK extensions: {exc}") from None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CertificateFormatError("AMD CRL: not a DER or PEM CRL") from None
