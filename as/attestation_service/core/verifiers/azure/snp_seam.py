"""The SEV-SNP part of `az-snp-vtpm`: the report inside the HCL report, its VCEK chain and signature.

This is the seam to the `snp` verifier package: parsing, claims and the
pinned AMD chains come from `attestation_service.core.verifiers.snp`
(`report`, `certs`, `claims`); the checks needed here (VCEK <- ASK <- ARK at
`now`, VCEK TCB extensions == reported_tcb, ECDSA P-384 signature over bytes
[0, 0x2A0)) are done locally so that this module depends only on those
stable pieces. Pure.
"""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation_service.core.verifiers.snp.certs import amd_roots, issued_by, load_certificate, vek_extensions
from attestation_service.core.verifiers.snp.claims import report_claims
from attestation_service.core.verifiers.snp.report import SnpReport, parse_report
from trustee_common.errors import EvidenceError

SIG_ALGO_ECDSA_P384_SHA384 = 1


class SnpCheckError(EvidenceError):
    """The SNP report of an Azure HCL report failed a check."""


def parse_snp(hw_report: bytes) -> SnpReport:
    return parse_report(hw_report)


def check_vcek_chain(vcek_der: bytes, report: SnpReport, now: datetime.datetime) -> tuple[x509.Certificate, str]:
    """The VCEK and its product, after checking VCEK <- ASK <- pinned ARK and its TCB extensions."""
    vcek = load_certificate(vcek_der, "vcek")
    for product, roots in amd_roots().items():
        if not issued_by(vcek, roots.ask):
            continue
        if not issued_by(roots.ask, roots.ark):
            raise SnpCheckError(f"SEV-{product} is not signed by ARK-{product}")
        for cert in (vcek, roots.ask, roots.ark):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise SnpCheckError(f"{cert.subject.rfc4514_string()} is not valid at {now.isoformat()}")
        ext = vek_extensions(vcek)
        tcb = report.reported_tcb
        for name, cert_value, report_value in (("blSPL", ext.bootloader, tcb.bootloader), ("teeSPL", ext.tee, tcb.tee),
                                               ("snpSPL", ext.snp, tcb.snp), ("ucodeSPL", ext.microcode, tcb.microcode)):
            if cert_value is not None and cert_value != report_value:
                raise SnpCheckError(f"VCEK {name} {cert_value} != reported_tcb {report_value}")
        if ext.hwid is not None and any(report.chip_id) and ext.hwid != report.chip_id[: len(ext.hwid)]:
            raise SnpCheckError("VCEK hwID does not equal the report's chip_id")
        return vcek, product
    raise SnpCheckError("the VCEK is not signed by the ASK of any shipped AMD chain (Milan, Genoa, Turin)")


def check_signature(report: SnpReport, vcek: x509.Certificate) -> str:
    if report.sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise SnpCheckError(f"signature_algo {report.sig_algo} is not ECDSA P-384 with SHA-384 (1)")
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SnpCheckError("the VCEK key is not an EC key")
    der = encode_dss_signature(int.from_bytes(report.signature_r, "little"), int.from_bytes(report.signature_s, "little"))
    try:
        key.verify(der, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SnpCheckError("the SNP report signature does not verify with the VCEK") from None
    return "ECDSA P-384 signature over [0, 0x2A0) verified with the VCEK"


def snp_claims(report: SnpReport, product: str) -> dict[str, Any]:
    return report_claims(report, product, "VCEK")
