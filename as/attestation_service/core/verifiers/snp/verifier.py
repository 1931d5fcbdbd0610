"""`snp` (class cpu): the AS verifier around `verify_snp_report`.

Evidence is upstream's `{"attestation_report": <virtee serde object>,
"cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|"ARK"|"CRL"|..., "data": [bytes]}] | null}`
(guest-components.md 3.3). When the evidence carries no VCEK, the VCEK is
asked of a `VcekLookup` that adapters fill (offline KDS-layout store, KDS
cache); a VLEK can only come with the evidence. `verification_time`, when
set, replaces the service clock for the SNP checks (test-only config).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from attestation_service.core.verifier import Claims
from attestation_service.core.verifiers.snp.certs import PRODUCTS, TURIN_HWID_SIZE, common_name, load_certificate
from attestation_service.core.verifiers.snp.report import SIGNING_KEY_VCEK, SnpReport, parse_report, report_from_json
from attestation_service.core.verifiers.snp.verify import SnpVerificationError, SnpVerificationInput, verify_snp_report
from trustee_common.errors import EvidenceError, MalformedRequestError

#: Largest `cert_chain` accepted (real chains hold at most VCEK/VLEK, ASK, ARK and a CRL).
MAX_CHAIN_ENTRIES = 8
MAX_ENTRY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class VcekKey:
    """What identifies a VCEK: the product (None when a v2 report lacks CPUID), hwID and reported TCB."""

    product: str | None
    chip_id: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def of(cls, report: SnpReport) -> VcekKey:
        t = report.reported_tcb
        return cls(report.product, report.chip_id, t.bootloader, t.tee, t.snp, t.microcode, t.fmc)

    def products(self) -> tuple[str, ...]:
        return (self.product,) if self.product is not None else PRODUCTS

    def hwid(self, product: str) -> str:
        return (self.chip_id[:TURIN_HWID_SIZE] if product == "Turin" else self.chip_id).hex()

    def kds_path(self, product: str) -> str:
        """`vcek/v1/<product>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..[&fmcSPL=..]` (AMD KDS, evidence.md 3.3)."""
        query = f"blSPL={self.bootloader}&teeSPL={self.tee}&snpSPL={self.snp}&ucodeSPL={self.microcode}"
        if product == "Turin" and self.fmc is not None:
            query += f"&fmcSPL={self.fmc}"
        return f"vcek/v1/{product}/{self.hwid(product)}?{query}"


#: `VcekKey -> DER VCEK or None`.
VcekLookup = Callable[[VcekKey], bytes | None]


@dataclass(frozen=True, slots=True)
class SnpEvidence:
    report: bytes
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...]


def _byte_list(value: object, where: str) -> bytes:
    if not isinstance(value, list) or len(value) > MAX_ENTRY_BYTES:
        raise MalformedRequestError(f"evidence (snp): {where} must be an array of at most {MAX_ENTRY_BYTES} bytes")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in value):
        raise MalformedRequestError(f"evidence (snp): {where} must hold byte values 0..255")
    return bytes(value)


def parse_evidence(evidence: object) -> SnpEvidence:
    """Raw report bytes, certificates and CRL from the wire JSON (the report is not yet parsed)."""
    if not isinstance(evidence, dict):
        raise MalformedRequestError("evidence (snp): must be a JSON object")
    if "attestation_report" not in evidence:
        raise MalformedRequestError("evidence (snp): field 'attestation_report' is missing")
    try:
        raw = report_from_json(evidence["attestation_report"])
    except EvidenceError as exc:
        raise type(exc)(f"step 1 (report layout): {exc.detail}") from None
    chain = evidence.get("cert_chain")
    if chain is not None and (not isinstance(chain, list) or len(chain) > MAX_CHAIN_ENTRIES):
        raise MalformedRequestError(f"evidence (snp): cert_chain must be null or an array of at most {MAX_CHAIN_ENTRIES} entries")
    certificates: list[x509.Certificate] = []
    crls: list[bytes] = []
    for index, entry in enumerate(chain or ()):
        if not isinstance(entry, dict):
            raise MalformedRequestError(f"evidence (snp): cert_chain[{index}] must be an object")
        kind, data = entry.get("cert_type"), _byte_list(entry.get("data"), f"cert_chain[{index}].data")
        if kind in ("VCEK", "VLEK", "ASK", "ASVK", "ARK"):
            try:
                certificates.append(load_certificate(data, f"cert_chain[{index}] ({kind})"))
            except EvidenceError as exc:
                raise SnpVerificationError(f"step 3 (endorsement key): {exc.detail}") from None
        elif kind == "CRL":
            crls.append(data)
    return SnpEvidence(raw, tuple(certificates), tuple(crls))


def _parse_or_step1(raw: bytes) -> SnpReport:
    try:
        return parse_report(raw)
    except EvidenceError as exc:
        raise type(exc)(f"step 1 (report layout): {exc.detail}") from None


def needs_vcek(evidence: SnpEvidence, report: SnpReport) -> bool:
    """True when the report is VCEK-signed and the evidence carries no VCEK (the lookup may supply one)."""
    return report.signing_key == SIGNING_KEY_VCEK and all(common_name(c) != "SEV-VCEK" for c in evidence.certificates)


class SnpVerifier:
    tee = "snp"

    def __init__(
        self,
        vcek_lookup: VcekLookup | None = None,
        *,
        crls: tuple[bytes, ...] = (),
        verification_time: datetime.datetime | None = None,
    ) -> None:
        self._lookup = vcek_lookup
        self._crls = crls
        self._pinned_time = verification_time

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        parsed = parse_evidence(evidence)
        report = _parse_or_step1(parsed.report)
        certificates = parsed.certificates
        if needs_vcek(parsed, report) and self._lookup is not None:
            der = self._lookup(VcekKey.of(report))
            if der is not None:
                try:
                    certificates = (*certificates, load_certificate(der, "stored VCEK"))
                except EvidenceError as exc:
                    raise SnpVerificationError(f"step 3 (endorsement key): {exc.detail}") from None
        request = SnpVerificationInput(
            report=parsed.report,
            now=self._pinned_time if self._pinned_time is not None else now,
            certificates=certificates,
            crls=(*parsed.crls, *self._crls),
            report_data=expected_report_data,
            init_data_hash=expected_init_data_hash,
        )
        return [(verify_snp_report(request), "cpu")]
