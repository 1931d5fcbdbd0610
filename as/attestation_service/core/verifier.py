"""The verifier interface and the registry by TEE name.

A verifier is pure: parsed evidence JSON, the expected report data and
init-data digest, and `now` in; a list of `(claims, tee_class)` out (one
entry per attested device; NVIDIA-style verifiers return several). It
raises `EvidenceError` when the evidence does not verify and
`MalformedRequestError` when it is not shaped like that TEE's evidence.
Collateral fetching (PCCS, AMD KDS) belongs in adapters that run before it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from trustee_common.errors import AttestationError

Claims = dict[str, Any]


class Verifier(Protocol):
    def evaluate(
        self,
        evidence: object,
        expected_report_data: bytes | None,
        expected_init_data_hash: bytes | None,
        now: datetime.datetime,
    ) -> list[tuple[Claims, str]]: ...


@runtime_checkable
class RuntimeDataAware(Protocol):
    """A verifier that also checks evidence against the structured runtime data (tpm: a certified tee-pubkey)."""

    def evaluate_with_runtime_data(
        self,
        evidence: object,
        expected_report_data: bytes | None,
        expected_init_data_hash: bytes | None,
        now: datetime.datetime,
        runtime_data: object,
    ) -> list[tuple[Claims, str]]: ...


@runtime_checkable
class ReferenceValueAnchored(Protocol):
    """A verifier whose trust anchors include reference values (e.g. `tpm`'s `trusted_aks`).

    The AS reads `trust_reference_values` from the RVPS for each request and
    verifies with `with_reference_values(values)`, a new verifier (no shared state).
    """

    trust_reference_values: tuple[str, ...]

    def with_reference_values(self, values: Mapping[str, Any]) -> Verifier: ...


def default_verifiers() -> dict[str, Verifier]:
    """Every verifier this build has, by kbs-types TEE name."""
    from attestation_service.core.verifiers.azure import AzSnpVtpmVerifier, AzTdxVtpmVerifier
    from attestation_service.core.verifiers.sample import SampleDeviceVerifier, SampleVerifier
    from attestation_service.core.verifiers.tdx import TdxVerifier
    from attestation_service.core.verifiers.tpm import TpmVerifier

    # `tdx` without collateral refuses every quote; `grpc-as` replaces it with a configured one.
    # `tpm` without configured AK anchors trusts only the RVPS's `trusted_aks`; `grpc-as` configures more.
    return {
        "sample": SampleVerifier(), "sampledevice": SampleDeviceVerifier(), "tdx": TdxVerifier(),
        "tpm": TpmVerifier(), "az-snp-vtpm": AzSnpVtpmVerifier(), "az-tdx-vtpm": AzTdxVtpmVerifier(),
    }


#: TEEs whose evidence this service never verifies (upstream's config tables for them are accepted and unused).
NOT_VERIFIED_HERE = {"nvidia": "NVIDIA GPU", "nvidia-dpu": "NVIDIA DPU"}


def verifier_for(verifiers: Mapping[str, Verifier], tee: str) -> Verifier:
    try:
        return verifiers[tee]
    except KeyError:
        if tee in NOT_VERIFIED_HERE:
            raise AttestationError(f"no verifier for tee {tee}: {NOT_VERIFIED_HERE[tee]} evidence is not verified by this "
                                   "attestation service") from None
        raise AttestationError(f"no verifier for tee {tee}") from None
