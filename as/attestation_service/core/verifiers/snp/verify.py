"""SEV-SNP report verification (evidence.md 3.4) as numbered steps.

`evaluate_snp_report` never raises on bad evidence: it returns an
`SnpVerificationReport` listing every step (pass / fail / skipped) up to the
first failure, for `trustee verify`. `verify_snp_report` runs the same code
and raises the failing step's `EvidenceError` subclass, its message starting
`step N (name):`. Steps:

1. report layout (size, version 2..5, signature algorithm, MBZ fields, policy bit 17)
2. verification time
3. endorsement key: the VCEK or VLEK named by `signer_info`, among the given certificates
4. product: CPUID (v3+) and the key's productName agree (v2: productName alone)
5. AMD chain: ARK pinned and self-signed, ASK/ASVK <- ARK, VCEK/VLEK <- ASK/ASVK
   (RSA-PSS SHA-384 salt 48), all valid at `now`; optional ARK-signed CRLs (ASK/ASVK not revoked)
6. key extensions: bl/tee/snp/ucode (and fmc on Turin) SPLs = reported_tcb, VCEK hwID = chip_id
7. report signature: ECDSA P-384 SHA-384 over [0, 0x2A0) with little-endian r/s
8. report data: = expected padded/truncated to 64 bytes (skipped without an expected value)
9. init data: host_data = init-data digest padded/truncated to 32 bytes (skipped without one)

The verifier establishes authenticity and binding; VMPL, debug, measurement
and TCB minimums are the policy's (claims `vmpl`, `policy_debug_allowed`, ...).
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation_service.core.verifiers.snp.certs import (
    PINNED_ARK_SHA256,
    PRODUCTS,
    TURIN_HWID_SIZE,
    AmdRoots,
    VekExtensions,
    amd_roots,
    common_name,
    fingerprint,
    load_crl,
    pss_signed_by,
    signed_link,
    vek_extensions,
)
from attestation_service.core.verifiers.snp.claims import report_claims
from attestation_service.core.verifiers.snp.report import (
    SIGNING_KEYS,
    SnpReport,
    SnpReportParseError,
    parse_report,
)
from attestation_service.core.verifiers.steps import PASS, SkipStep, StepResult, VerificationReport, fail_step, run_steps
from trustee_common.errors import EvidenceError

REPORT_DATA_SIZE = 64
INIT_DATA_SIZE = 32

__all__ = [
    "SnpVerificationError",
    "SnpVerificationInput",
    "SnpVerificationReport",
    "StepResult",
    "evaluate_snp_report",
    "report_signature_valid",
    "verify_snp_report",
]


class SnpVerificationError(EvidenceError):
    """An SNP report failed a verification step; the message names the step."""


#: Kept for callers that name the report by TEE.
SnpVerificationReport = VerificationReport


@dataclass(frozen=True, slots=True)
class SnpVerificationInput:
    """`certificates`: the VCEK or VLEK and optionally ASK/ASVK/ARK, in any order (evidence, collateral, store)."""

    report: bytes
    now: datetime.datetime
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[bytes, ...] = ()
    report_data: bytes | None = None
    init_data_hash: bytes | None = None


@dataclass
class _Context:
    request: SnpVerificationInput
    report: SnpReport
    key_kind: str = "VCEK"
    vek: x509.Certificate | None = None
    product: str | None = None
    roots: AmdRoots | None = None
    extensions: VekExtensions | None = None


def _fail(detail: str) -> SnpVerificationError:
    return SnpVerificationError(detail)


def regularize(data: bytes, size: int) -> bytes:
    """Trustee's padding rule: zero-pad or truncate to `size` bytes."""
    return data[:size].ljust(size, b"\0")


# --- the steps ------------------------------------------------------------------------------


def step_time(ctx: _Context) -> str:
    if ctx.request.now.tzinfo is None:
        raise _fail("the verification time has no time zone")
    return ctx.request.now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def step_endorsement_key(ctx: _Context) -> str:
    ctx.key_kind = SIGNING_KEYS[ctx.report.signing_key]
    wanted = f"SEV-{ctx.key_kind}"
    keys = [c for c in ctx.request.certificates if common_name(c) == wanted]
    if not keys:
        chip = ctx.report.chip_id.hex()[:16]
        raise _fail(f"no {ctx.key_kind} certificate for this report (chip_id {chip}..., not in the evidence or collateral)")
    ctx.vek = keys[0]
    return f"{ctx.key_kind} {ctx.vek.subject.rfc4514_string()}"


def step_product(ctx: _Context) -> str:
    assert ctx.vek is not None
    from_cpuid = ctx.report.product
    try:
        ctx.extensions = vek_extensions(ctx.vek)
    except EvidenceError as exc:
        raise _fail(exc.detail) from None
    from_key = ctx.extensions.product
    if ctx.report.cpuid is not None and from_cpuid is None:
        raise _fail(f"CPUID family/model {ctx.report.cpuid[0]:#x}/{ctx.report.cpuid[1]:#x} is not Milan, Genoa or Turin")
    if from_cpuid is not None and from_key is not None and from_key != from_cpuid:
        raise _fail(f"the report is from a {from_cpuid} CPU but the {ctx.key_kind} is for {from_key}")
    product = from_cpuid or from_key
    if product not in PRODUCTS:
        raise _fail(f"cannot tell the product (CPUID absent in a v{ctx.report.version} report, {ctx.key_kind} productName {from_key!r})")
    ctx.product = product
    ctx.roots = amd_roots()[product]
    return f"{product} (from {'CPUID' if from_cpuid else ctx.key_kind + ' productName'})"


def _supplied(ctx: _Context, name: str) -> x509.Certificate | None:
    return next((c for c in ctx.request.certificates if common_name(c) == name), None)


def step_chain(ctx: _Context) -> str:
    roots, vek = ctx.roots, ctx.vek
    assert roots is not None and vek is not None
    ark = roots.ark
    for cert in ctx.request.certificates:
        if common_name(cert).startswith("ARK-") and fingerprint(cert) != PINNED_ARK_SHA256[roots.product]:
            raise _fail(f"{common_name(cert)} (SHA-256 {fingerprint(cert)[:16]}...) is not the pinned ARK-{roots.product}")
    vcek = ctx.key_kind == "VCEK"
    name = f"SEV-{roots.product}" if vcek else f"SEV-VLEK-{roots.product}"
    shipped = roots.ask if vcek else roots.asvk  # with the ARK, verified once when the roots were loaded
    intermediate = _supplied(ctx, name) or shipped
    if intermediate != shipped and not signed_link(intermediate, ark):
        raise _fail(f"{name} is not signed by ARK-{roots.product}")
    if not signed_link(vek, intermediate):
        raise _fail(f"the {ctx.key_kind} is not signed by {name} (RSA-PSS SHA-384): not issued by the AMD {roots.product} chain")
    now = ctx.request.now
    for cert in (ark, intermediate, vek):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            window = f"{cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()}"
            raise _fail(f"{common_name(cert)} is not valid at {now.isoformat()} (valid {window})")
    detail = f"{ctx.key_kind} <- {name} <- ARK-{roots.product} (pinned), valid at {now.isoformat()}"
    return detail + "; " + _check_crls(ctx.request.crls, ark, intermediate, now)


def _check_crls(crls: tuple[bytes, ...], ark: x509.Certificate, intermediate: x509.Certificate, now: datetime.datetime) -> str:
    """Revocation of the ASK/ASVK by every given CRL issued (by name) by this ARK; other products' CRLs are ignored."""
    applied, stale = 0, False
    for data in crls:
        try:
            crl = load_crl(data)
        except EvidenceError as exc:
            raise _fail(exc.detail) from None
        if crl.issuer != ark.subject:
            continue
        if not pss_signed_by(crl.signature, crl.tbs_certlist_bytes, ark):
            raise _fail(f"a CRL naming {common_name(ark)} as issuer is not signed by it")
        if crl.get_revoked_certificate_by_serial_number(intermediate.serial_number) is not None:
            raise _fail(f"{common_name(intermediate)} (serial {intermediate.serial_number:x}) is revoked by the AMD CRL")
        applied += 1
        stale = stale or (crl.next_update_utc is not None and crl.next_update_utc < now)
    if not applied:
        return "no CRL given (revocation not checked)"
    return f"{common_name(intermediate)} not revoked by {applied} CRL(s)" + (" (a CRL is past its nextUpdate)" if stale else "")


def step_extensions(ctx: _Context) -> str:
    ext = ctx.extensions
    assert ext is not None
    tcb = ctx.report.reported_tcb
    pairs: list[tuple[str, int | None, int | None]] = [
        ("blSPL", ext.bootloader, tcb.bootloader), ("teeSPL", ext.tee, tcb.tee), ("snpSPL", ext.snp, tcb.snp),
        ("ucodeSPL", ext.microcode, tcb.microcode),
    ]
    if ctx.product == "Turin":
        pairs.append(("fmcSPL", ext.fmc, tcb.fmc))
    for name, cert_value, report_value in pairs:
        if cert_value != report_value:
            raise _fail(f"{ctx.key_kind} {name} {cert_value} does not equal reported_tcb {report_value}")
    if ctx.key_kind != "VCEK":
        return f"SPLs = reported_tcb; VLEK (cspID {ext.csp_id!r}), no hwID"
    if ext.hwid is None:
        raise _fail("the VCEK has no hwID extension")
    chip = ctx.report.chip_id[:TURIN_HWID_SIZE] if ctx.product == "Turin" else ctx.report.chip_id
    if not hmac.compare_digest(ext.hwid, chip):
        raise _fail(f"VCEK hwID {ext.hwid.hex()[:16]}... does not equal chip_id {chip.hex()[:16]}...: a VCEK of another chip")
    return "SPLs = reported_tcb; hwID = chip_id"


def report_signature_valid(report: SnpReport, key: object) -> bool:
    """The bare P-384 ECDSA check of the report signature (little-endian r/s)."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return False
    der = encode_dss_signature(int.from_bytes(report.signature_r, "little"), int.from_bytes(report.signature_s, "little"))
    try:
        key.verify(der, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


def step_signature(ctx: _Context) -> str:
    assert ctx.vek is not None
    key = ctx.vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise _fail(f"the {ctx.key_kind} key is not EC P-384")
    if not report_signature_valid(ctx.report, key):
        raise _fail(f"the report signature over [0, 0x2A0) does not verify with the {ctx.key_kind} key")
    return f"ECDSA P-384 signature verified with the {ctx.key_kind} key"


def check_binding(actual: bytes, expected: bytes | None, size: int, name: str) -> str:
    if expected is None:
        raise SkipStep(f"no expected value: {name} not checked")
    if not hmac.compare_digest(actual, regularize(expected, size)):
        raise _fail(f"{name} {actual.hex()} does not equal the expected value padded/truncated to {size} bytes")
    return f"{name} matches"


# --- the pipeline -----------------------------------------------------------------------------


def evaluate_snp_report(request: SnpVerificationInput) -> SnpVerificationReport:
    result = SnpVerificationReport()
    try:
        report = parse_report(request.report)
    except SnpReportParseError as exc:
        return fail_step(result, 1, "report layout", exc)
    result.steps.append(StepResult(1, "report layout", PASS, f"version {report.version}, signed by {SIGNING_KEYS[report.signing_key]}"))
    ctx = _Context(request, report)
    steps: list[tuple[int, str, Callable[[_Context], str]]] = [
        (2, "verification time", step_time),
        (3, "endorsement key", step_endorsement_key),
        (4, "product", step_product),
        (5, "AMD certificate chain", step_chain),
        (6, "key extensions", step_extensions),
        (7, "report signature", step_signature),
        (8, "report data binding", lambda c: check_binding(c.report.report_data, request.report_data, REPORT_DATA_SIZE, "report_data")),
        (9, "init data binding", lambda c: check_binding(c.report.host_data, request.init_data_hash, INIT_DATA_SIZE, "host_data")),
    ]
    if run_steps(result, ctx, steps):
        result.claims = report_claims(report, ctx.product, ctx.key_kind)
    return result


def verify_snp_report(request: SnpVerificationInput) -> dict[str, Any]:
    """The claims of a report that passed every step; raises the failing step's error otherwise."""
    result = evaluate_snp_report(request)
    result.raise_for_failure()
    assert result.claims is not None
    return result.claims

