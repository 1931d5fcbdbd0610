"""The ports the KBS services depend on; adapters implement them (kbs.as_client)."""

from __future__ import annotations

from typing import Protocol

from kbs.core.evidence import EvidenceItem


class AttestationServicePort(Protocol):
    """The Attestation Service and, through its proxy, the RVPS.

    Implementations raise `TrusteeError`s: the AS's own errors by class,
    `UpstreamError` when it cannot be reached.
    """

    async def evaluate(self, items: list[EvidenceItem], policy_ids: list[str]) -> str:
        """The attestation token (EAR JWT) for the evidence."""

    async def set_policy(self, policy_id: str, policy_b64url: str) -> None:
        """Store an attestation policy (base64url-no-pad Rego text)."""

    async def register_reference_value(self, message: str) -> None:
        """Register an RVPS message (its JSON text)."""

    async def query_reference_value(self, reference_value_id: str) -> str | None:
        """The JSON text of the value, or None when absent."""

    async def appraisal_epoch(self) -> str:
        """The AS's current appraisal epoch (docs/token-freshness.md)."""

    async def close(self) -> None: ...
