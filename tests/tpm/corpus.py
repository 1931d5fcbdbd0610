"""The TPM and Azure vTPM corpus (/work/shared/corpus, PROVENANCE.md) and helpers to mutate it."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

CORPUS = Path("/work/shared/corpus")
TPM_EVIDENCE = CORPUS / "tpm" / "trustee" / "evidence.json"
AZ_SNP_EVIDENCE = CORPUS / "azure" / "az-snp-vtpm" / "evidence-v1.json"
AZ_TDX_EVIDENCE = CORPUS / "azure" / "az-tdx-vtpm" / "evidence-v1.json"
#: The Azure captures' vTPM quote nonce (trustee's az tests use report data "challenge").
AZ_REPORT_DATA = b"challenge"
#: Inside every certificate window of the Azure corpus (VCEK 2023-05-02..2030-05-02).
AZ_TIME = "2025-06-01T00:00:00Z"
#: The 64-byte extraData of the libtpms sample (an older attester padded to 64 bytes).
TPM_EXTRA_DATA = bytes.fromhex(
    "a04182b506878d4f29b91ee606a71a0d3361ccf1b22db20c98adcaa537bea393ef0e41a18b3569ab678f1497fbc5c120" + "00" * 16
)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def tpm_evidence() -> dict[str, Any]:
    return load(TPM_EVIDENCE)


def flip_b64(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def flip_hex(text: str, index: int) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[index] ^= 0x01
    return raw.hex()


def mutated(evidence: dict[str, Any], field: str, index: int) -> dict[str, Any]:
    """A copy with one bit of `tpm_quote[field]` flipped (base64 or hex as the evidence uses)."""
    out = copy.deepcopy(evidence)
    value = out["tpm_quote"][field]
    is_hex = all(c in "0123456789abcdef" for c in value)
    out["tpm_quote"][field] = flip_hex(value, index) if is_hex else flip_b64(value, index)
    return out


def _b64url_any(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def az_as_v0(evidence: dict[str, Any], tee: str) -> dict[str, Any]:
    """The same Azure capture re-encoded in the version 0 layout (no `version`, byte arrays, PEM VCEK).

    Legitimate test data: only the JSON encoding changes; the HCL report, the
    TD quote, the VCEK and the vTPM quote bytes (everything signed) are the
    capture's own, so a v0 verdict must equal the v1 verdict.
    """
    quote = evidence["tpm_quote"]
    raw_quote = {
        "signature": list(bytes.fromhex(quote["signature"])),
        "message": list(bytes.fromhex(quote["message"])),
        "pcrs": [list(bytes.fromhex(p)) for p in quote["pcrs"]],
    }
    hcl = list(_b64url_any(evidence["hcl_report"]))
    if tee == "az-snp-vtpm":
        der = _b64url_any(evidence["vcek"])
        body = base64.encodebytes(der).decode("ascii")
        pem = "-----BEGIN CERTIFICATE-----\n" + body + "-----END CERTIFICATE-----\n"
        return {"quote": raw_quote, "report": hcl, "vcek": pem}
    return {"tpm_quote": raw_quote, "hcl_report": hcl, "td_quote": list(_b64url_any(evidence["td_quote"]))}


def az_relabelled(evidence: dict[str, Any], version: object) -> dict[str, Any]:
    """The capture with another `version` value (v1 and v2 share one layout)."""
    out = copy.deepcopy(evidence)
    out["version"] = version
    return out
