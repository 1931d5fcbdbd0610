"""`az-snp-vtpm` and `az-tdx-vtpm` verification as numbered steps, report and raising forms. Pure.

Every evidence version (0, 1, 2; `hcl.py`) goes through the same steps.
az-snp-vtpm: 1 evidence layout, 2 SNP report (VMPL 0), 3 VCEK chain (the
product's ASK/ARK, the product from CPUID as upstream), 4 SNP report
signature, 5 runtime data binding (SNP report_data[0:32] == SHA-256(HCL
runtime data)), then the vTPM steps.
az-tdx-vtpm: 1 evidence layout, 2 TD quote (DCAP steps with collateral, or
only the quote's signatures, QE binding and PCK chain without), 3 TD quote
binding (quote report_data == TDREPORT report_data), 4 runtime data binding
(TDREPORT report_data[0:32] == SHA-256(HCL runtime data)), then the vTPM steps.
vTPM steps: quote signature (HCLAkPub from the runtime data, RSASSA-SHA256),
PCR digest, report data binding (quote nonce == expected report data,
exactly, as upstream; version 2 also: the HCL runtime data's `user-data`
begins with the expected report data), init data binding (PCR 8).

Claims, as upstream's (docs/claims.md): az-snp-vtpm the SNP claims as
strings with a base64 `measurement` (`snp_seam.snp_claims`), az-tdx-vtpm
the `tdx` quote claims; then `report_data` = the vTPM quote nonce (hex),
`init_data` = PCR 8 (hex) and `tpm.pcr00`..`tpm.pcr23` (hex).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attestation_service.core.verifiers.azure.hcl import (
    HASH_TYPE_SHA256,
    REPORT_TYPE_SNP,
    REPORT_TYPE_TDX,
    AzureEvidence,
    HclReport,
    HclReportError,
    parse_hcl_report,
)
from attestation_service.core.verifiers.steps import VerificationReport, run_steps
from attestation_service.core.verifiers.tdx import (
    CollateralVerifier,
    TdxCollateral,
    TdxVerificationInput,
    evaluate_tdx_quote,
    parse_quote,
)
from attestation_service.core.verifiers.tpm.quote import (
    TpmQuoteError,
    check_header,
    check_init_data,
    check_nonce,
    check_pcr_digest,
    verify_signature,
)
from attestation_service.core.verifiers.tpm.structures import (
    ALG_RSASSA,
    ALG_SHA256,
    TpmsAttest,
    TpmtSignature,
    parse_attest,
)
from attestation_service.core.verifiers.tpm.verify import pcr_claims
from trustee_common.errors import EvidenceError


class AzureVerificationError(EvidenceError):
    """Azure vTPM evidence failed a step; the message names the step."""


#: Kept for callers that name the report by TEE.
AzureVerificationReport = VerificationReport


@dataclass
class _Context:
    evidence: AzureEvidence
    hcl: HclReport | None = None
    attest: TpmsAttest | None = None
    platform_claims: dict[str, Any] = field(default_factory=dict)
    bound: bytes = b""


def _layout(ctx: _Context, report_type: int) -> str:
    ctx.hcl = parse_hcl_report(ctx.evidence.hcl_report)
    if ctx.hcl.report_type != report_type:
        raise HclReportError(f"HCL report type {ctx.hcl.report_type}, expected {report_type}")
    if ctx.hcl.hash_type != HASH_TYPE_SHA256:
        raise HclReportError(f"HCL runtime data hash type {ctx.hcl.hash_type} is not SHA-256 (1)")
    ctx.attest = parse_attest(ctx.evidence.message)
    return f"HCL report type {report_type}, {len(ctx.hcl.var_data)} bytes of runtime data; " + check_header(ctx.attest)


def _hcl(ctx: _Context) -> HclReport:
    assert ctx.hcl is not None
    return ctx.hcl


def _runtime_binding(ctx: _Context) -> str:
    digest = hashlib.sha256(_hcl(ctx).var_data).digest()
    if not hmac.compare_digest(ctx.bound[:32], digest):
        raise AzureVerificationError(f"report_data[0:32] {ctx.bound[:32].hex()} != SHA-256(HCL runtime data) {digest.hex()}")
    return "report_data[0:32] == SHA-256(HCL runtime data)"


def _report_data_binding(ctx: _Context, attest: TpmsAttest, report_data: bytes | None) -> str:
    detail = check_nonce(attest, report_data, size=None)
    if ctx.evidence.version < 2:
        return detail
    assert report_data is not None  # check_nonce skips the step without it
    user_data = _hcl(ctx).user_data()
    if len(user_data) < len(report_data) or not hmac.compare_digest(user_data[: len(report_data)], report_data):
        raise AzureVerificationError(f"HCL user-data {user_data.hex()} does not begin with the expected report data (version 2)")
    return detail + "; HCL user-data begins with it (version 2)"


def _vtpm_steps(
    ctx: _Context, first: int, report_data: bytes | None, init_data_hash: bytes | None
) -> list[tuple[int, str, Callable[[_Context], str]]]:
    def signature(c: _Context) -> str:
        sig = TpmtSignature(ALG_RSASSA, ALG_SHA256, signature=c.evidence.signature)
        return verify_signature(_hcl(c).ak_public(), c.evidence.message, sig).replace("the AK", "HCLAkPub")

    def attest(c: _Context) -> TpmsAttest:
        assert c.attest is not None
        return c.attest

    return [
        (first, "vTPM quote signature", signature),
        (first + 1, "PCR digest", lambda c: check_pcr_digest(attest(c), c.evidence.pcrs, ALG_SHA256)),
        (first + 2, "report data binding", lambda c: _report_data_binding(c, attest(c), report_data)),
        (first + 3, "init data binding", lambda c: check_init_data(c.evidence.pcrs, init_data_hash)),
    ]


def _run(ctx: _Context, steps: list[tuple[int, str, Callable[[_Context], str]]]) -> AzureVerificationReport:
    report = AzureVerificationReport()
    if not run_steps(report, ctx, steps, AzureVerificationError):
        return report
    assert ctx.attest is not None
    claims = dict(ctx.platform_claims)
    claims["tpm"] = pcr_claims(ctx.evidence.pcrs)
    claims["init_data"] = ctx.evidence.pcrs[8].hex()
    claims["report_data"] = ctx.attest.extra_data.hex()
    report.claims = claims
    return report


def evaluate_az_snp_vtpm(
    evidence: AzureEvidence, *, now: datetime.datetime, report_data: bytes | None = None, init_data_hash: bytes | None = None
) -> AzureVerificationReport:
    from attestation_service.core.verifiers.azure import snp_seam

    ctx = _Context(evidence)
    state: dict[str, Any] = {}

    def snp_report(c: _Context) -> str:
        state["report"] = snp_seam.parse_snp(_hcl(c).hw_report)
        c.bound = state["report"].report_data
        return snp_seam.check_vmpl(state["report"])

    def chain(c: _Context) -> str:
        state["vcek"], state["product"] = snp_seam.check_vcek_chain(c.evidence.platform, state["report"], now)
        c.platform_claims = snp_seam.snp_claims(state["report"])
        return f"VCEK <- SEV-{state['product']} <- ARK-{state['product']} (pinned), TCB extensions match"

    steps: list[tuple[int, str, Callable[[_Context], str]]] = [
        (1, "evidence layout", lambda c: _layout(c, REPORT_TYPE_SNP)),
        (2, "SNP report", snp_report),
        (3, "VCEK chain", chain),
        (4, "SNP report signature", lambda c: snp_seam.check_signature(state["report"], state["vcek"])),
        (5, "runtime data binding", _runtime_binding),
        *_vtpm_steps(ctx, 6, report_data, init_data_hash),
    ]
    return _run(ctx, steps)


def evaluate_az_tdx_vtpm(
    evidence: AzureEvidence,
    *,
    now: datetime.datetime,
    report_data: bytes | None = None,
    init_data_hash: bytes | None = None,
    collateral: TdxCollateral | None = None,
    collateral_verifier: CollateralVerifier | None = None,
) -> AzureVerificationReport:
    ctx = _Context(evidence)

    def td_quote(c: _Context) -> str:
        request = TdxVerificationInput(quote=c.evidence.platform, now=now, collateral=collateral)
        result = evaluate_tdx_quote(request, collateral_verifier)
        if result.error is not None:
            raise AzureVerificationError(f"TD quote {result.error.detail}")
        assert result.claims is not None
        c.platform_claims = {k: v for k, v in result.claims.items() if k not in ("report_data", "init_data")}
        if collateral is None:
            return "TD quote signatures, QE binding and PCK chain verified; no collateral: TCB not evaluated (no tcb_status)"
        return f"TD quote verified with collateral: tcb_status {result.claims.get('tcb_status')}"

    def binding(c: _Context) -> str:
        quote_rd = parse_quote(c.evidence.platform).body.report_data
        c.bound = _hcl(c).tdreport_report_data
        if not hmac.compare_digest(quote_rd, c.bound):
            raise AzureVerificationError(f"TD quote report_data {quote_rd.hex()} != TDREPORT report_data {c.bound.hex()}")
        return "TD quote report_data == HCL TDREPORT report_data"

    steps: list[tuple[int, str, Callable[[_Context], str]]] = [
        (1, "evidence layout", lambda c: _layout(c, REPORT_TYPE_TDX)),
        (2, "TD quote", td_quote),
        (3, "TD quote binding", binding),
        (4, "runtime data binding", _runtime_binding),
        *_vtpm_steps(ctx, 5, report_data, init_data_hash),
    ]
    return _run(ctx, steps)


__all__ = ["AzureVerificationError", "AzureVerificationReport", "TpmQuoteError", "evaluate_az_snp_vtpm", "evaluate_az_tdx_vtpm"]
