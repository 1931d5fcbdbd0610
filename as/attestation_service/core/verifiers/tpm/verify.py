"""`tpm` verification as numbered steps (evidence.md 4.4), with a report form and a raising form.

Steps: 1 evidence layout (TPMS_ATTEST quote, TPMT_SIGNATURE, magic),
2 AK trust, 3 quote signature, 4 report data (extraData == expected
padded/truncated to 32 bytes), 5 PCR digest (the scheme's hash over the
selected SHA-256 PCRs), 6 event-log replay (when the evidence has one),
7 init data (PCR 8 == SHA-256(32 zero bytes || init-data digest)),
8 TEE key certification (when the evidence has `tee_pubkey_certify`:
TPM2_Certify of the request's `tee-pubkey` by the same AK, certify.py).
Claims `tee_pubkey_certified` (false without a certification) and, with
one, `tee_pubkey_name` (hex Name of the TPM-resident key).

AK trust (step 2) fails closed: the AK must be one the operator trusts,
in this order: one of the verifier's configured trusted AKs or one of the
`trusted_aks` reference values the AS passes in from the RVPS
(`reference_value`, `source` says which); or the evidence's `ak_cert_chain`
(leaf first) holds the AK and chains to a configured AK/EK CA at `now`
(`ca`). Anything else fails step 2 with a message naming every anchor that
was missing. Upstream leaves an unanchored AK to the policy (a software TPM
then gets a `warning` EAR); this project refuses it. The claim
`ak_trust.method` says which anchor matched.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from attestation_service.core.verifiers.steps import VerificationReport, run_steps
from attestation_service.core.verifiers.tpm.certify import TeeKeyCertification, check_certification
from attestation_service.core.verifiers.tpm.quote import (
    AkKey,
    SkipCheck,
    TpmQuoteError,
    check_header,
    check_init_data,
    check_nonce,
    check_pcr_digest,
    load_ak,
    verify_signature,
)
from attestation_service.core.verifiers.tpm.structures import TpmsAttest, TpmtSignature, parse_attest, parse_signature
from trustee_common.errors import EvidenceError

NONCE_SIZE = 32
#: Most certificates accepted in `ak_cert_chain`.
MAX_CHAIN = 8

#: `event log bytes -> replayed SHA-256 PCR0..23 and the uefi_event_logs claims`.
PcrReplayer = Callable[[bytes], tuple[list[bytes], list[dict[str, Any]]]]


#: Where the verifier's own anchors are configured (named in error messages).
CONFIG_HINT = "[verifier_config.tpm_verifier] trusted_aks / ak_ca_certs"


@dataclass(frozen=True, slots=True)
class AkTrust:
    """AK trust anchors: the verifier's (`[verifier_config.tpm_verifier]`) and the RVPS's `trusted_aks`."""

    #: DER SubjectPublicKeyInfo of AKs configured as trusted.
    trusted_aks: frozenset[bytes] = frozenset()
    #: AK/EK CA certificates an `ak_cert_chain` may end in.
    ca_certs: tuple[x509.Certificate, ...] = ()
    #: DER SubjectPublicKeyInfo of the AKs registered as the reference value `trusted_aks`.
    registered_aks: frozenset[bytes] = frozenset()
    #: Whether `registered_aks` was read from an RVPS (false in `trustee verify`).
    rvps: bool = True
    #: How the verifier's own anchors are configured, for the error message.
    config_hint: str = CONFIG_HINT

    @property
    def configured(self) -> bool:
        return bool(self.trusted_aks or self.ca_certs or self.registered_aks)

    def with_registered(self, aks: frozenset[bytes]) -> AkTrust:
        return AkTrust(self.trusted_aks, self.ca_certs, aks, self.rvps, self.config_hint)


@dataclass(frozen=True, slots=True)
class TpmEvidence:
    ak_public: str
    ak_der: bytes
    message: bytes
    signature: bytes
    pcrs: list[bytes]
    event_log: bytes | None = None
    ak_cert_chain: tuple[bytes, ...] = ()
    #: `tee_pubkey_certify`: TPM2_Certify of the tee-pubkey by the AK (docs/tpm-bound-keys.md).
    certification: TeeKeyCertification | None = None


#: Kept for callers that name the report by TEE.
TpmVerificationReport = VerificationReport


@dataclass
class _Context:
    evidence: TpmEvidence
    attest: TpmsAttest | None = None
    signature: TpmtSignature | None = None
    key: AkKey | None = None
    ak_trust: dict[str, Any] = field(default_factory=dict)
    uefi_event_logs: list[dict[str, Any]] | None = None
    key_claims: dict[str, Any] = field(default_factory=lambda: {"tee_pubkey_certified": False})


def _parse(ctx: _Context) -> str:
    ctx.attest = parse_attest(ctx.evidence.message)
    ctx.signature = parse_signature(ctx.evidence.signature)
    ctx.key = load_ak(ctx.evidence.ak_der)
    return check_header(ctx.attest) + f"; {ctx.signature.scheme} signature"


def _same_key(cert: x509.Certificate, der: bytes) -> bool:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki == der


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_ak_trust(evidence: TpmEvidence, trust: AkTrust, now: datetime.datetime) -> dict[str, Any]:
    """The `ak_trust` claim; raises `TpmQuoteError` naming the missing anchors when no anchor holds the AK."""
    if evidence.ak_der in trust.trusted_aks:
        return {"method": "reference_value", "source": "verifier_config"}
    if evidence.ak_der in trust.registered_aks:
        return {"method": "reference_value", "source": "rvps"}
    chain_problem = None
    if trust.ca_certs and evidence.ak_cert_chain:
        try:
            chain = _load_chain(evidence, now)
        except TpmQuoteError as exc:
            raise TpmQuoteError(untrusted_ak_message(trust, exc.detail)) from None
        for ca in trust.ca_certs:
            if chain[-1] == ca or _issued_by(chain[-1], ca):
                return {"method": "ca", "ca": ca.subject.rfc4514_string(), "ak_cert": chain[0].subject.rfc4514_string()}
        chain_problem = "ak_cert_chain does not end in a configured AK/EK CA"
    raise TpmQuoteError(untrusted_ak_message(trust, chain_problem))


def _load_chain(evidence: TpmEvidence, now: datetime.datetime) -> list[x509.Certificate]:
    """The evidence's `ak_cert_chain`, checked to hold the AK, be valid at `now` and link up."""
    try:
        chain = [x509.load_der_x509_certificate(c) for c in evidence.ak_cert_chain]
    except ValueError:
        raise TpmQuoteError("ak_cert_chain holds a certificate that is not DER X.509") from None
    if not _same_key(chain[0], evidence.ak_der):
        raise TpmQuoteError("the first ak_cert_chain certificate does not hold ak_public")
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise TpmQuoteError(f"{cert.subject.rfc4514_string()} is not valid at {now.isoformat()}")
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            raise TpmQuoteError(f"{child.subject.rfc4514_string()} is not signed by {parent.subject.rfc4514_string()}")
    return chain


def untrusted_ak_message(trust: AkTrust, chain_problem: str | None = None) -> str:
    """`TPM AK not trusted: ...`, one clause per anchor, saying what was missing or did not match."""
    clauses: list[str] = []
    if trust.rvps:
        registered = "matches ak_public" if trust.registered_aks else "is registered"
        clauses.append(f"no trusted_aks reference value {registered}")
    clauses.append("ak_public is not a configured trusted AK" if trust.trusted_aks else "no trusted AK is configured")
    if not trust.ca_certs:
        clauses.append("no EK/AK CA is configured")
    elif chain_problem is not None:
        clauses.append(chain_problem)
    else:
        clauses.append("the evidence has no ak_cert_chain for the configured EK/AK CA")
    return f"TPM AK not trusted: {'; '.join(clauses)} ({trust.config_hint})"


def _replay(ctx: _Context, replayer: PcrReplayer | None) -> str:
    if ctx.evidence.event_log is None:
        raise SkipCheck("no event_log in the evidence")
    if replayer is None:
        raise SkipCheck("no event log replayer configured")
    try:
        replayed, claims = replayer(ctx.evidence.event_log)
    except EvidenceError as exc:
        raise TpmQuoteError(exc.detail) from None
    touched = {int(c["index"]) for c in claims if isinstance(c.get("index"), int)}
    for index in sorted(touched):
        if index < len(replayed) and replayed[index] != ctx.evidence.pcrs[index]:
            quoted = ctx.evidence.pcrs[index].hex()
            raise TpmQuoteError(f"PCR {index}: the event log replays to {replayed[index].hex()}, the quote has {quoted}")
    ctx.uefi_event_logs = claims
    return f"{len(claims)} events reproduce PCRs {','.join(str(i) for i in sorted(touched)) or '(none)'}"


def pcr_claims(pcrs: Sequence[bytes]) -> dict[str, str]:
    return {f"pcr{index:02d}": value.hex() for index, value in enumerate(pcrs)}


def evaluate_tpm_quote(
    evidence: TpmEvidence,
    *,
    now: datetime.datetime,
    report_data: bytes | None = None,
    init_data_hash: bytes | None = None,
    trust: AkTrust | None = None,
    replayer: PcrReplayer | None = None,
    tee_pubkey: object = None,
) -> TpmVerificationReport:
    """Every step up to the first failure; never raises on bad evidence. `tee_pubkey`: the request's JWK."""
    report = TpmVerificationReport()
    ctx = _Context(evidence)
    anchors = trust if trust is not None else AkTrust()

    def ak_step(c: _Context) -> str:
        c.ak_trust = check_ak_trust(c.evidence, anchors, now)
        method = c.ak_trust["method"]
        where = c.ak_trust["ca"] if method == "ca" else c.ak_trust["source"]
        return f"AK trusted by {method} ({where})"

    def signature_step(c: _Context) -> str:
        assert c.key is not None and c.signature is not None
        return verify_signature(c.key, c.evidence.message, c.signature)

    def digest_step(c: _Context) -> str:
        assert c.attest is not None and c.signature is not None
        return check_pcr_digest(c.attest, c.evidence.pcrs, c.signature.hash_alg)

    def certify_step(c: _Context) -> str:
        if c.evidence.certification is None:
            raise SkipCheck("no tee_pubkey_certify in the evidence: tee_pubkey_certified is false")
        assert c.key is not None
        detail, c.key_claims = check_certification(c.evidence.certification, c.key, report_data, tee_pubkey)
        return detail

    steps: list[tuple[int, str, Callable[[_Context], str]]] = [
        (1, "evidence layout", _parse),
        (2, "AK trust", ak_step),
        (3, "quote signature", signature_step),
        (4, "report data binding", lambda c: check_nonce(_attest(c), report_data, size=NONCE_SIZE)),
        (5, "PCR digest", digest_step),
        (6, "event log replay", lambda c: _replay(c, replayer)),
        (7, "init data binding", lambda c: check_init_data(c.evidence.pcrs, init_data_hash)),
        (8, "TEE key certification", certify_step),
    ]
    if run_steps(report, ctx, steps, TpmQuoteError):
        report.claims = tpm_claims(ctx)
    return report


def _attest(ctx: _Context) -> TpmsAttest:
    assert ctx.attest is not None
    return ctx.attest


def tpm_claims(ctx: _Context) -> dict[str, Any]:
    attest = _attest(ctx)
    claims: dict[str, Any] = {
        **pcr_claims(ctx.evidence.pcrs),
        "ak_public": ctx.evidence.ak_public,
        "ak_trust": ctx.ak_trust,
        "report_data": attest.extra_data.hex(),
        "init_data": ctx.evidence.pcrs[8].hex(),
        "firmware_version": f"{attest.firmware_version:016x}",
        **ctx.key_claims,
    }
    if ctx.uefi_event_logs is not None:
        claims["uefi_event_logs"] = ctx.uefi_event_logs
    return claims


def verify_tpm_quote(evidence: TpmEvidence, **kwargs: Any) -> dict[str, Any]:
    """The claims of evidence that passed every step; raises the failing step's `TpmQuoteError`."""
    report = evaluate_tpm_quote(evidence, **kwargs)
    report.raise_for_failure()
    assert report.claims is not None
    return report.claims
