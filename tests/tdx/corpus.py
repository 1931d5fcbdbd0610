"""The real TDX corpus (/work/shared/corpus/tdx, PROVENANCE.md) and its expected verdicts."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attestation_service.core.verifiers.tdx import TdxCollateral

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
TDX = CORPUS / "tdx"


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Case:
    name: str
    time: str | None
    #: None = valid; otherwise the step prefix of the expected rejection.
    rejected_at: str | None
    tcb_status: str | None

    @property
    def folder(self) -> Path:
        return TDX / self.name

    @property
    def quote(self) -> bytes:
        return (self.folder / "quote.bin").read_bytes()

    @property
    def collateral_path(self) -> Path | None:
        path = self.folder / "collateral.json"
        return path if path.exists() else None

    @property
    def collateral(self) -> TdxCollateral | None:
        path = self.collateral_path
        return None if path is None else TdxCollateral.from_json(json.loads(path.read_text()))

    @property
    def now(self) -> datetime.datetime:
        return at(self.time) if self.time else datetime.datetime.now(datetime.UTC)


V4 = Case("dcap-qvl-v4-uptodate", "2025-07-01T00:00:00Z", None, "UpToDate")
V5 = Case("dcap-qvl-v5-tcb-unsupported", "2026-03-01T00:00:00Z", "step 11 (platform TCB level)", None)
GCP = Case("gcp-ccel", None, None, None)
DEBUG_TD = Case("trustee-debug-td", None, None, None)
CASES = (V4, V5, GCP, DEBUG_TD)


def flip(offset: int) -> Callable[[bytes], bytes]:
    return lambda q: q[:offset] + bytes([q[offset] ^ 0x01]) + q[offset + 1 :]


def swap_base64_char(offset: int) -> Callable[[bytes], bytes]:
    return lambda q: q[:offset] + (b"B" if q[offset : offset + 1] == b"A" else b"A") + q[offset + 1 :]


# v4 absolute offsets (evidence.md 1.3): body 48.., signature @636, key @700, QE report @770,
# QE signature @1154, QE auth data @1220 (size @1218), PCK chain PEM @1258.
MUTATIONS = {
    "signature": (flip(650), "step 10 (quote signature)"),
    "body mr_td": (flip(190), "step 10 (quote signature)"),
    "body report_data": (flip(600), "step 10 (quote signature)"),
    "header user_data": (flip(30), "step 10 (quote signature)"),
    "attestation key": (flip(720), "step 8 (QE report binding)"),
    "QE report": (flip(800), "step 7 (QE report signature)"),
    "QE report signature": (flip(1160), "step 7 (QE report signature)"),
    "QE auth data": (flip(1225), "step 8 (QE report binding)"),
    "certification data (PCK chain)": (swap_base64_char(1600), "step 4 (PCK certificate chain)"),
    "vendor id": (flip(12), "step 1 (quote header and layout)"),
    "truncated": (lambda q: q[:3000], "step 1 (quote header and layout)"),
}
