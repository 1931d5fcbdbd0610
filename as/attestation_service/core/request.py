"""One verification request, parsed and validated at the edge.

The gRPC servicer hands over the raw fields of an
`IndividualAttestationRequest`; `VerificationRequest.parse` decodes them
(evidence: strict base64url of JSON text; runtime data: raw base64url
bytes or structured JSON text hashed with RFC 8785 + the named algorithm;
init data: base64url digest or TOML) and raises `MalformedRequestError`
naming the field. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attestation_service.core.initdata import parse_init_data_toml
from trustee_common.b64 import url_decode
from trustee_common.bounded import loads_json
from trustee_common.canonical import HashAlgorithm, runtime_data_digest
from trustee_common.errors import MalformedRequestError
from trustee_common.tee import parse_tee

MAX_EVIDENCE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    tee: str
    evidence: Any
    #: The digest the evidence must carry, or None when the caller sent no runtime data.
    report_data: bytes | None
    #: The structured runtime data (policy input `runtime_data_claims`), or None.
    runtime_data_claims: Any
    init_data_digest: bytes | None
    init_data_claims: dict[str, Any] | None

    @classmethod
    def parse(
        cls,
        *,
        tee: str,
        evidence: str,
        runtime_data: tuple[str, str] | None,
        init_data: tuple[str, str] | None,
        hash_algorithm: str,
    ) -> VerificationRequest:
        """`runtime_data` = ("raw"|"structured", text); `init_data` = ("digest"|"toml", text)."""
        name = parse_tee(tee, "tee")
        parsed_evidence = _evidence(evidence)
        algorithm = HashAlgorithm.parse(hash_algorithm)
        report_data, runtime_claims = _runtime_data(runtime_data, algorithm)
        init_digest, init_claims = _init_data(init_data)
        return cls(name, parsed_evidence, report_data, runtime_claims, init_digest, init_claims)


def _evidence(text: str) -> Any:
    if len(text) > MAX_EVIDENCE_BYTES * 4 // 3 + 4:
        raise MalformedRequestError(f"evidence: larger than {MAX_EVIDENCE_BYTES} bytes")
    if not text:
        raise MalformedRequestError("evidence: empty")
    raw = url_decode(text, "evidence")
    return loads_json(raw, "evidence")


def _runtime_data(value: tuple[str, str] | None, algorithm: HashAlgorithm) -> tuple[bytes | None, Any]:
    if value is None:
        return None, None
    kind, text = value
    if kind == "raw":
        return url_decode(text, "raw_runtime_data"), None
    structured = loads_json(text, "structured_runtime_data")
    return runtime_data_digest(structured, algorithm), structured


def _init_data(value: tuple[str, str] | None) -> tuple[bytes | None, dict[str, Any] | None]:
    if value is None:
        return None, None
    kind, text = value
    if kind == "digest":
        return url_decode(text, "init_data_digest"), None
    parsed = parse_init_data_toml(text)
    return parsed.digest, parsed.claims
