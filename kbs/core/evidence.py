"""Build the Attestation Service requests for one `/attest` (trustee-server.md 2.3, 2.4).

One request per evidence: the primary one (TEE from the session) binds
`{"additional-evidence", "nonce", "tee-pubkey"}`, each additional-evidence
entry (TEE = its map key) binds `{"nonce", "tee-pubkey"}`. Evidence travels
as base64url-no-pad of its compact JSON text. The transport (gRPC) is not
known here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustee_common.b64 import url_encode
from trustee_common.canonical import device_runtime_data, primary_runtime_data
from trustee_common.messages import Attestation

#: The policy id the KBS asks for; the AS appends `_<tee class>` for EARs.
POLICY_IDS = ("default",)


@dataclass(frozen=True)
class EvidenceItem:
    tee: str
    evidence: str
    structured_runtime_data: str
    runtime_data_hash_algorithm: str
    init_data_toml: str | None


def hash_algorithm_for(tee: str) -> str:
    """sha384 everywhere except IBM SE, which binds with sha512."""
    return "sha512" if tee == "se" else "sha384"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def evidence_items(tee: str, attestation: Attestation) -> list[EvidenceItem]:
    """The primary item first, then one per additional-evidence entry in map order."""
    runtime = attestation.runtime_data
    evidence = attestation.tee_evidence
    primary_rd = primary_runtime_data(runtime.nonce, runtime.tee_pubkey.jwk, evidence.additional_evidence)
    init_toml = None if attestation.init_data is None else attestation.init_data.body
    items = [
        EvidenceItem(
            tee=tee,
            evidence=url_encode(_json_text(evidence.primary_evidence).encode()),
            structured_runtime_data=_json_text(primary_rd),
            runtime_data_hash_algorithm=hash_algorithm_for(tee),
            init_data_toml=init_toml,
        )
    ]
    device_rd = _json_text(device_runtime_data(runtime.nonce, runtime.tee_pubkey.jwk))
    for device_tee, device_evidence in evidence.devices().items():
        items.append(
            EvidenceItem(
                tee=device_tee,
                evidence=url_encode(_json_text(device_evidence).encode()),
                structured_runtime_data=device_rd,
                runtime_data_hash_algorithm=hash_algorithm_for(device_tee),
                init_data_toml=None,
            )
        )
    return items
