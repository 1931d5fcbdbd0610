"""The real SNP corpus (/work/shared/corpus/snp, PROVENANCE.md), its expected verdicts, and wire-JSON helpers."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestation_service.core.verifiers.snp import load_certificates, parse_report, report_to_json
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
SNP = CORPUS / "snp"
AMD = SNP / "amd"


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Case:
    """One corpus case at one time; `rejected_at` None means valid."""

    name: str
    folder: str
    time: str
    rejected_at: str | None
    vmpl: int = 0
    #: Certificate files of the folder handed as collateral (relative to the folder).
    collateral: tuple[str, ...] = field(default_factory=tuple)

    @property
    def path(self) -> Path:
        return SNP / self.folder

    @property
    def now(self) -> datetime.datetime:
        return at(self.time)

    @property
    def wire_json(self) -> dict[str, Any]:
        """Upstream's wire JSON: the e2e file as is; raw reports with their collateral in `cert_chain`."""
        if (self.path / "evidence.json").exists():
            loaded: dict[str, Any] = json.loads((self.path / "evidence.json").read_text())
            return loaded
        return wire_json(self.report, self.certificates)

    @property
    def report(self) -> bytes:
        if (self.path / "report.bin").exists():
            return (self.path / "report.bin").read_bytes()
        from attestation_service.core.verifiers.snp import parse_evidence

        return parse_evidence(self.wire_json).report

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for name in self.collateral for c in load_certificates((self.path / name).read_bytes(), name))


def wire_json(report: bytes, certificates: tuple[x509.Certificate, ...] = ()) -> dict[str, Any]:
    chain = []
    for cert in certificates:
        cn = cert.subject.rfc4514_string().split(",")[0].removeprefix("CN=")
        kind = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}.get(cn, "ARK" if cn.startswith("ARK-") else "ASK")
        chain.append({"cert_type": kind, "data": list(cert.public_bytes(Encoding.DER))})
    return {"attestation_report": report_to_json(parse_report(report)), "cert_chain": chain or None}


MILAN = Case("virtee-milan", "virtee-milan", "2025-01-01T00:00:00Z", None, collateral=("vcek.der", "cert_chain.pem"))
GENOA = Case("trustee-genoa-e2e", "trustee-genoa-e2e", "2026-01-01T00:00:00Z", None)
VLEK = Case("trustee-vlek", "trustee-vlek", "2025-06-01T00:00:00Z", None, vmpl=1, collateral=("vlek.der",))
VLEK_EXPIRED = Case("trustee-vlek-expired", "trustee-vlek", "2026-01-01T00:00:00Z", "step 5 (AMD certificate chain)",
                    vmpl=1, collateral=("vlek.der",))
INVALID_LEGACY = Case("invalid-vcek-legacy", "virtee-milan", "2025-01-01T00:00:00Z", "step 5 (AMD certificate chain)",
                      collateral=("../trustee-invalid-vcek/test-vcek-invalid-legacy.der",))
INVALID_NEW = Case("invalid-vcek-new", "virtee-milan", "2025-01-01T00:00:00Z", "step 5 (AMD certificate chain)",
                   collateral=("../trustee-invalid-vcek/test-vcek-invalid-new.der",))
CASES = (MILAN, GENOA, VLEK, VLEK_EXPIRED, INVALID_LEGACY, INVALID_NEW)


def flip(offset: int) -> Callable[[bytes], bytes]:
    return lambda r: r[:offset] + bytes([r[offset] ^ 0x01]) + r[offset + 1 :]


# Report offsets (evidence.md 3.1): measurement @0x90, report_data @0x50, signature r @0x2A0, s @0x2E8.
MUTATIONS = {
    "signature r": (flip(0x2A0 + 5), "step 7 (report signature)"),
    "signature s": (flip(0x2E8 + 40), "step 7 (report signature)"),
    "measurement": (flip(0x90 + 3), "step 7 (report signature)"),
    "report_data": (flip(0x50), "step 7 (report signature)"),
    "host_data": (flip(0xC0), "step 7 (report signature)"),
    "chip_id": (flip(0x1A0), "step 6 (key extensions)"),
    "reported_tcb": (flip(0x180), "step 6 (key extensions)"),
    "guest policy MBZ bit": (flip(0x08 + 4), "step 1 (report layout)"),
    "version": (lambda r: bytes([7]) + r[1:], "step 1 (report layout)"),
    "truncated": (lambda r: r[:1000], "step 1 (report layout)"),
}
