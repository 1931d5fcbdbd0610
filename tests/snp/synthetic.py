"""A synthetic AMD chain (test ARK/ASK, a VCEK with AMD extensions) and reports signed by it.

Real AMD keys cannot sign test data, so revocation, Turin layouts and v5
reports are exercised against this chain, installed in place of the pinned
roots by monkeypatching `verify.amd_roots` (the pinned roots themselves are
tested with the real corpus).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from attestation_service.core.verifiers.snp.certs import AMD_OID, AMD_PSS, AmdRoots
from attestation_service.core.verifiers.snp.report import REPORT_SIZE, SIGNED_SIZE
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
CHIP_ID = bytes(range(1, 65))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Advanced Micro Devices")])


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _cert(subject: str, issuer: str, key: object, signer: rsa.RSAPrivateKey, extensions: dict[str, bytes] | None = None,
          serial: int = 1) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key)  # type: ignore[arg-type]
               .serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER))
    for oid, value in (extensions or {}).items():
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=AMD_PSS)


@dataclass
class SyntheticChain:
    roots: AmdRoots
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey

    def issue_vcek(self, spls: tuple[int, int, int, int, int], hwid: bytes) -> SyntheticChain:
        """The same ARK/ASK with a new VCEK (new key) carrying these SPLs and hwID."""
        key = ec.generate_private_key(ec.SECP384R1())
        cert = _cert("SEV-VCEK", "SEV-Turin", key.public_key(), self.ask_key, _vcek_extensions(spls, hwid))
        return SyntheticChain(self.roots, self.ark_key, self.ask_key, cert, key)

    def crl(self, revoked: list[int]) -> bytes:
        builder = x509.CertificateRevocationListBuilder().issuer_name(self.roots.ark.subject)
        builder = builder.last_update(NOT_BEFORE).next_update(NOT_AFTER)
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOT_BEFORE).build())
        return builder.sign(self.ark_key, hashes.SHA384(), rsa_padding=AMD_PSS).public_bytes(Encoding.DER)

    def report(self, *, version: int = 5, tcb: bytes = bytes([1, 2, 3, 4, 0, 0, 0, 5]), vmpl: int = 0) -> bytes:
        raw = bytearray(REPORT_SIZE)
        raw[0:4] = version.to_bytes(4, "little")
        raw[0x08:0x10] = ((1 << 17) | (1 << 16)).to_bytes(8, "little")
        raw[0x30:0x34] = vmpl.to_bytes(4, "little")
        raw[0x34:0x38] = (1).to_bytes(4, "little")
        raw[0x50:0x90] = b"R" * 64
        raw[0x90:0xC0] = b"M" * 48
        for at in (0x38, 0x180, 0x1E0, 0x1F0):
            raw[at : at + 8] = tcb
        raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x00])  # Turin
        raw[0x1A0:0x1E0] = CHIP_ID
        if version >= 5:
            raw[0x1F8:0x200] = (3).to_bytes(8, "little")
        signature = self.vcek_key.sign(bytes(raw[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        raw[0x2A0:0x2E8] = r.to_bytes(72, "little")
        raw[0x2E8:0x330] = s.to_bytes(72, "little")
        return bytes(raw)


def turin_chain(spls: tuple[int, int, int, int, int] = (2, 3, 4, 5, 1), hwid: bytes = CHIP_ID[:8]) -> SyntheticChain:
    """ARK-Turin -> SEV-Turin -> a VCEK with bl/tee/snp/ucode/fmc SPLs `spls` and an 8-byte hwID."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark = _cert("ARK-Turin", "ARK-Turin", ark_key.public_key(), ark_key)
    ask = _cert("SEV-Turin", "ARK-Turin", ask_key.public_key(), ark_key, serial=0x1234)
    vcek = _cert("SEV-VCEK", "SEV-Turin", vcek_key.public_key(), ask_key, _vcek_extensions(spls, hwid))
    return SyntheticChain(AmdRoots("Turin", ark, ask, ask), ark_key, ask_key, vcek, vcek_key)


def _vcek_extensions(spls: tuple[int, int, int, int, int], hwid: bytes) -> dict[str, bytes]:
    bl, tee, snp, ucode, fmc = spls
    return {
        f"{AMD_OID}.1": _der_int(1),
        f"{AMD_OID}.2": b"\x16\x05Turin",
        f"{AMD_OID}.3.1": _der_int(bl), f"{AMD_OID}.3.2": _der_int(tee), f"{AMD_OID}.3.3": _der_int(snp),
        f"{AMD_OID}.3.8": _der_int(ucode), f"{AMD_OID}.3.9": _der_int(fmc),
        f"{AMD_OID}.4": hwid,
    }
