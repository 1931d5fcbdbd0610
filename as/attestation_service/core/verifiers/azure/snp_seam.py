"""The SEV-SNP part of `az-snp-vtpm`: the report inside the HCL report, its VCEK chain and signature.

This is the seam to the `snp` verifier package: parsing, the policy and
platform bit positions and the pinned AMD chains come from
`attestation_service.core.verifiers.snp` (`report`, `certs`, `claims`); the
checks needed here are done locally so that this module depends only on
those stable pieces: the product from the report's CPUID as upstream picks
it (Milan, Genoa, Turin; the VCEK's productName when a v2 report has no
CPUID), VCEK <- that product's ASK <- its pinned ARK at `now`, the VCEK's
SPL extensions == reported_tcb and hwID == chip_id, VMPL 0, and the ECDSA
P-384 signature over bytes [0, 0x2A0). Pure.
"""

from __future__ import annotations

import base64
import datetime
import hmac
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation_service.core.verifiers.snp.certs import TURIN_HWID_SIZE, amd_roots, issued_by, load_certificate, vek_extensions
from attestation_service.core.verifiers.snp.claims import PLATFORM_BITS, POLICY_BITS
from attestation_service.core.verifiers.snp.report import SnpReport, parse_report
from trustee_common.errors import EvidenceError

SIG_ALGO_ECDSA_P384_SHA384 = 1


class SnpCheckError(EvidenceError):
    """The SNP report of an Azure HCL report failed a check."""


def parse_snp(hw_report: bytes) -> SnpReport:
    return parse_report(hw_report)


def product_of(report: SnpReport, vcek: x509.Certificate) -> str:
    """The AMD product whose chain must sign the VCEK: from CPUID, as upstream (v3+ reports).

    A report without CPUID (v2) falls back to the VCEK's productName (upstream
    refuses such a report); when both are there they must agree.
    """
    from_cpuid = report.product
    if report.cpuid is not None and from_cpuid is None:
        raise SnpCheckError(f"CPUID family/model {report.cpuid[0]:#x}/{report.cpuid[1]:#x} is not Milan, Genoa or Turin")
    from_key = vek_extensions(vcek).product
    if from_cpuid is not None and from_key is not None and from_key != from_cpuid:
        raise SnpCheckError(f"the report is from a {from_cpuid} CPU but the VCEK is for {from_key}")
    product = from_cpuid or from_key
    if product not in amd_roots():
        raise SnpCheckError(f"cannot tell the product (CPUID absent in a v{report.version} report, VCEK productName {from_key!r})")
    return product


def check_vcek_chain(vcek_der: bytes, report: SnpReport, now: datetime.datetime) -> tuple[x509.Certificate, str]:
    """The VCEK and its product, after checking VCEK <- ASK <- pinned ARK of that product and its extensions."""
    vcek = load_certificate(vcek_der, "vcek")
    product = product_of(report, vcek)
    roots = amd_roots()[product]  # each ASK is checked against its pinned ARK once, when loaded
    if not issued_by(vcek, roots.ask):
        raise SnpCheckError(f"the VCEK is not signed by SEV-{product} (the report's CPU is {product})")
    for cert in (vcek, roots.ask, roots.ark):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnpCheckError(f"{cert.subject.rfc4514_string()} is not valid at {now.isoformat()}")
    ext = vek_extensions(vcek)
    tcb = report.reported_tcb
    pairs: list[tuple[str, int | None, int | None]] = [
        ("blSPL", ext.bootloader, tcb.bootloader), ("teeSPL", ext.tee, tcb.tee), ("snpSPL", ext.snp, tcb.snp),
        ("ucodeSPL", ext.microcode, tcb.microcode),
    ]
    if product == "Turin":
        pairs.append(("fmcSPL", ext.fmc, tcb.fmc))
    for name, cert_value, report_value in pairs:
        if cert_value != report_value:
            raise SnpCheckError(f"VCEK {name} {cert_value} != reported_tcb {report_value}")
    chip = report.chip_id[:TURIN_HWID_SIZE] if product == "Turin" else report.chip_id
    if ext.hwid is None or not hmac.compare_digest(ext.hwid, chip):
        raise SnpCheckError("VCEK hwID does not equal the report's chip_id")
    return vcek, product


def check_vmpl(report: SnpReport) -> str:
    """The HCL asks for its report at VMPL 0, as upstream requires."""
    if report.vmpl != 0:
        raise SnpCheckError(f"the SNP report was issued at VMPL {report.vmpl}, not 0")
    return f"SNP report v{report.version}, VMPL 0"


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


def snp_claims(report: SnpReport) -> dict[str, Any]:
    """Upstream's az-snp-vtpm claims of the SNP report: every value a string, `measurement` in standard base64.

    Unlike the `snp` verifier's (integers, booleans, hex), see docs/claims.md;
    `report_data` and `init_data` are set from the vTPM quote by the caller.
    """
    policy, platform = report.policy, report.platform_info
    values: dict[str, object] = {
        "policy_abi_major": policy >> 8 & 0xFF,
        "policy_abi_minor": policy & 0xFF,
        **{f"policy_{name}": bool(policy >> POLICY_BITS[name] & 1)
           for name in ("smt_allowed", "migrate_ma", "debug_allowed", "single_socket")},
        "reported_tcb_bootloader": report.reported_tcb.bootloader,
        "reported_tcb_tee": report.reported_tcb.tee,
        "reported_tcb_snp": report.reported_tcb.snp,
        "reported_tcb_microcode": report.reported_tcb.microcode,
        "platform_tsme_enabled": bool(platform >> PLATFORM_BITS["tsme_enabled"] & 1),
        "platform_smt_enabled": bool(platform >> PLATFORM_BITS["smt_enabled"] & 1),
    }
    claims: dict[str, Any] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}
    claims["measurement"] = base64.b64encode(report.measurement).decode("ascii")
    return claims
