"""`tpm` (class cpu): the AS verifier around `verify_tpm_quote`.

Evidence is upstream's `{"ak_public": <std b64 DER SPKI>, "tpm_quote":
{"message": <std b64 TPMS_ATTEST>, "signature": <std b64 TPMT_SIGNATURE>,
"pcrs": [24 hex SHA-256]}}` plus two optional fields of this project:
`event_log` (std b64 TCG crypto-agile log, replayed against the PCRs) and
`ak_cert_chain` (list of std b64 DER certificates, leaf first, for AK trust
by CA), and `tee_pubkey_certify` (`{"public", "attest", "signature"}`, std
b64 TPMT_PUBLIC / TPMS_ATTEST / TPMT_SIGNATURE: TPM2_Certify of the
tee-pubkey by the AK, docs/tpm-bound-keys.md). The verifier reads the
request's `tee-pubkey` from the structured runtime data
(`RuntimeDataAware`) to check a certification against it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from attestation_service.core.verifier import Claims
from attestation_service.core.verifiers.tpm.certify import TeeKeyCertification
from attestation_service.core.verifiers.tpm.quote import TpmQuoteError, parse_pcrs
from attestation_service.core.verifiers.tpm.verify import MAX_CHAIN, AkTrust, TpmEvidence, verify_tpm_quote
from trustee_common.b64 import std_decode
from trustee_common.errors import MalformedRequestError


def replay_tpm_event_log(data: bytes) -> tuple[list[bytes], list[dict[str, Any]]]:
    """SHA-256 PCR0..23 replayed from a TCG event log, and its `uefi_event_logs` claims."""
    from attestation_service.core.eventlog import parse_event_log, replay_pcrs

    log = parse_event_log(data)
    return replay_pcrs(log), log.to_claims()


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedRequestError(f"evidence ({where}): field '{key}' is missing or not a string")
    return value


def parse_evidence(evidence: object) -> TpmEvidence:
    if not isinstance(evidence, dict):
        raise MalformedRequestError("evidence (tpm): must be a JSON object")
    quote = evidence.get("tpm_quote")
    if not isinstance(quote, dict):
        raise MalformedRequestError("evidence (tpm): field 'tpm_quote' is missing or not an object")
    ak_public = _string(evidence, "ak_public", "tpm")
    try:
        pcrs = parse_pcrs(quote.get("pcrs"), "evidence (tpm) tpm_quote")
    except TpmQuoteError as exc:
        raise MalformedRequestError(exc.detail) from None
    log = evidence.get("event_log")
    if log is not None and not isinstance(log, str):
        raise MalformedRequestError("evidence (tpm): field 'event_log' must be a string or null")
    chain = evidence.get("ak_cert_chain") or []
    if not isinstance(chain, list) or len(chain) > MAX_CHAIN or not all(isinstance(c, str) for c in chain):
        raise MalformedRequestError(f"evidence (tpm): ak_cert_chain must be a list of at most {MAX_CHAIN} base64 strings")
    return TpmEvidence(
        certification=parse_certification(evidence.get("tee_pubkey_certify")),
        ak_public=ak_public,
        ak_der=std_decode(ak_public, "evidence (tpm) ak_public"),
        message=std_decode(_string(quote, "message", "tpm tpm_quote"), "evidence (tpm) tpm_quote.message"),
        signature=std_decode(_string(quote, "signature", "tpm tpm_quote"), "evidence (tpm) tpm_quote.signature"),
        pcrs=pcrs,
        event_log=None if log is None else std_decode(log, "evidence (tpm) event_log"),
        ak_cert_chain=tuple(std_decode(c, "evidence (tpm) ak_cert_chain") for c in chain),
    )


def parse_certification(value: object) -> TeeKeyCertification | None:
    """The optional `tee_pubkey_certify` object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedRequestError("evidence (tpm): field 'tee_pubkey_certify' must be an object or null")
    where = "tpm tee_pubkey_certify"
    public, attest, signature = (
        std_decode(_string(value, key, where), f"evidence (tpm) tee_pubkey_certify.{key}") for key in ("public", "attest", "signature")
    )
    return TeeKeyCertification(public, attest, signature)


def registered_aks(value: object) -> frozenset[bytes]:
    """DER AKs of the reference value `trusted_aks` (std base64 SPKI strings, as `ak_public`); others are ignored."""
    items = value if isinstance(value, list) else [value]
    found = set()
    for item in items:
        if isinstance(item, str):
            try:
                found.add(std_decode(item, "reference value trusted_aks"))
            except MalformedRequestError:
                continue
    return frozenset(found)


class TpmVerifier:
    """Fails closed: an AK that no anchor holds fails step 2 (verify.py)."""

    tee = "tpm"
    #: Reference values the AS reads from the RVPS and passes to `with_reference_values` per request.
    trust_reference_values = ("trusted_aks",)

    def __init__(self, trust: AkTrust | None = None) -> None:
        self.trust = trust if trust is not None else AkTrust()

    def with_reference_values(self, values: Mapping[str, Any]) -> TpmVerifier:
        """This verifier with the RVPS's current `trusted_aks` as registered AKs."""
        return TpmVerifier(self.trust.with_registered(registered_aks(values.get("trusted_aks"))))

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        return self.evaluate_with_runtime_data(evidence, expected_report_data, expected_init_data_hash, now, None)

    def evaluate_with_runtime_data(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None,
        now: datetime.datetime, runtime_data: object,
    ) -> list[tuple[Claims, str]]:
        """`evaluate`, a `tee_pubkey_certify` checked against the `tee-pubkey` of the structured `runtime_data`."""
        tee_pubkey = runtime_data.get("tee-pubkey") if isinstance(runtime_data, dict) else None
        claims = verify_tpm_quote(
            parse_evidence(evidence), now=now, report_data=expected_report_data, init_data_hash=expected_init_data_hash,
            trust=self.trust, replayer=replay_tpm_event_log, tee_pubkey=tee_pubkey,
        )
        return [(claims, "cpu")]
