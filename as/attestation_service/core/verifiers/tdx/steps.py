"""The DCAP verification steps of evidence.md 1.6 (Intel QVL semantics), one function each.

Each step takes the `StepContext`, returns a one-line detail on success,
raises `TdxVerificationError` on failure and `SkipStep` when it cannot
run (no collateral, no expected value). `verify.py` sequences them.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation_service.core.verifiers.steps import SkipStep
from attestation_service.core.verifiers.tdx.collateral import (
    VerifiedCollateral,
    ecdsa_raw_verify,
    issued_by,
    load_pem_chain,
    same_cert,
)
from attestation_service.core.verifiers.tdx.pck import PckExtension, parse_pck_extension
from attestation_service.core.verifiers.tdx.quote import TdReport15, TdxQuote
from attestation_service.core.verifiers.tdx.tcb import (
    REVOKED,
    IsvLevel,
    ModuleIdentity,
    TcbLevel,
    converge,
    match_isv_level,
    match_platform_level,
    relaunch_status,
    union,
)
from trustee_common.errors import EvidenceError, TrusteeError
from trustee_common.lru import BoundedLru

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
REPORT_DATA_SIZE = 64
INIT_DATA_SIZE = 48

class TdxVerificationError(EvidenceError):
    """A TDX quote failed a DCAP verification step; the message names the step."""


@dataclass(frozen=True, slots=True)
class EventLogResult:
    """What the event-log hook returns: replayed RTMR0..3 and the `uefi_event_logs` claims."""

    rtmrs: list[bytes]
    claims: list[dict[str, Any]]


EventLogReplayer = Callable[[bytes], EventLogResult | None]


@dataclass
class StepContext:
    quote: TdxQuote
    now: datetime.datetime
    collateral: VerifiedCollateral | None = None
    expired: bool = False
    pck_leaf: x509.Certificate | None = None
    pck_ca: x509.Certificate | None = None
    pck: PckExtension | None = None
    module_level: IsvLevel | None = None
    qe_level: IsvLevel | None = None
    platform_level: TcbLevel | None = None
    status: str | None = None
    advisory_ids: list[str] = field(default_factory=list)
    uefi_event_logs: list[dict[str, Any]] | None = None


def step_failure(detail: str) -> TdxVerificationError:
    return TdxVerificationError(detail)


# --- the steps ------------------------------------------------------------------------


def step_header(ctx: StepContext) -> str:
    h = ctx.quote.header
    if h.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise step_failure(f"att_key_type {h.att_key_type} is not ECDSA P-256 (2)")
    if h.tee_type != TEE_TYPE_TDX:
        raise step_failure(f"tee_type {h.tee_type:#x} is not TDX (0x81)")
    if h.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise step_failure(f"qe_vendor_id {h.qe_vendor_id.hex()} is not Intel's")
    return f"quote v{h.version}, body type {ctx.quote.body_type}, {ctx.quote.used_size} bytes"


def step_time(ctx: StepContext) -> str:
    if ctx.now.tzinfo is None:
        raise step_failure("the verification time has no time zone")
    return ctx.now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


#: PCK chains whose signatures were verified up to the pinned root, by the SHA-256 of their PEM and of the
#: root: (leaf, PCK CA, root). A signature depends only on those bytes, so an entry never goes stale; what
#: depends on the quote's time and collateral (validity periods, revocation) is checked on every quote.
#: A platform's quotes all carry its one chain: the two signature checks (about a quarter of a quote's
#: verification) are done once per platform.
SIGNED_PCK_CHAINS: BoundedLru[bytes, tuple[x509.Certificate, x509.Certificate, x509.Certificate]] = BoundedLru(256)


def _signed_pck_chain(pem: bytes, root: x509.Certificate) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    """The chain's leaf, PCK CA and root, their signatures checked up to the pinned `root` (memoised)."""
    key = hashlib.sha256(pem).digest() + root.fingerprint(hashes.SHA256())
    known = SIGNED_PCK_CHAINS.get(key)
    if known is not None:
        return known
    try:
        chain = load_pem_chain(pem, "PCK certificate chain")
    except EvidenceError as exc:
        raise step_failure(exc.detail) from None
    if len(chain) != 3:
        raise step_failure(f"PCK certificate chain has {len(chain)} certificates, expected 3 (leaf, PCK CA, root)")
    leaf, ca, chain_root = chain
    if not same_cert(chain_root, root):
        raise step_failure("the PCK chain does not end in the pinned Intel SGX Root CA")
    if not issued_by(ca, root):
        raise step_failure(f"{ca.subject.rfc4514_string()} is not signed by the Intel SGX Root CA")
    if not issued_by(leaf, ca):
        raise step_failure(f"the PCK leaf is not signed by {ca.subject.rfc4514_string()}")
    SIGNED_PCK_CHAINS.put(key, (leaf, ca, chain_root))
    return leaf, ca, chain_root


def step_pck_chain(ctx: StepContext, root: x509.Certificate) -> str:
    chain = _signed_pck_chain(ctx.quote.certification.pck_chain_pem, root)
    leaf, ca, _ = chain
    for cert in chain:
        if not cert.not_valid_before_utc <= ctx.now <= cert.not_valid_after_utc:
            raise step_failure(f"{cert.subject.rfc4514_string()} is not valid at {ctx.now.isoformat()}")
    common_name = " ".join(str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    if "SGX PCK Certificate" not in common_name:
        raise step_failure(f"leaf common name {common_name!r} is not an SGX PCK Certificate")
    try:
        ctx.pck = parse_pck_extension(leaf)
    except EvidenceError as exc:
        raise step_failure(exc.detail) from None
    ctx.pck_leaf, ctx.pck_ca = leaf, ca
    if ctx.collateral is None:
        return "chain leaf -> PCK CA -> pinned root verified; revocation not checked (no collateral)"
    col = ctx.collateral
    if col.root_crl.get_revoked_certificate_by_serial_number(ca.serial_number) is not None:
        raise step_failure(f"{ca.subject.rfc4514_string()} is revoked by the root CA CRL")
    if col.pck_crl.issuer != leaf.issuer or col.pck_crl_issuer.public_key() != ca.public_key():
        raise step_failure(f"the collateral's PCK CRL is not issued by the PCK leaf's issuer ({leaf.issuer.rfc4514_string()})")
    if col.pck_crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
        raise step_failure(f"the PCK leaf (serial {leaf.serial_number:x}) is revoked by the PCK CRL")
    return "chain verified; PCK CA and leaf not revoked"


def step_match(ctx: StepContext) -> str:
    col, pck = _need_collateral(ctx), _need_pck(ctx)
    info, qe = col.tcb_info, col.qe_identity
    if pck.fmspc != info.fmspc:
        raise step_failure(f"PCK FMSPC {pck.fmspc.hex().upper()} does not match the TCB Info FMSPC {info.fmspc.hex().upper()}")
    if pck.pce_id != info.pce_id:
        raise step_failure(f"PCK PCE-ID {pck.pce_id.hex()} does not match the TCB Info pceId {info.pce_id.hex()}")
    if info.id != "TDX" or info.version < 3:
        raise step_failure(f"TCB Info is {info.id} v{info.version}, a TDX quote needs TDX v3")
    if qe.id != "TD_QE" or qe.version != 2:
        raise step_failure(f"QE identity is {qe.id} v{qe.version}, a TDX quote needs TD_QE v2")
    return f"FMSPC {pck.fmspc.hex().upper()}, PCE-ID {pck.pce_id.hex()}"


def _module_identity(ctx: StepContext) -> ModuleIdentity:
    info = _need_collateral(ctx).tcb_info
    major = ctx.quote.body.tee_tcb_svn[1]
    if major == 0:
        return info.tdx_module
    wanted = f"TDX_{major:02X}"
    for identity in info.module_identities:
        if identity.id.upper() == wanted:
            return identity
    raise step_failure(f"TDX_MODULE_MISMATCH: the TCB Info has no module identity {wanted}")


def step_module(ctx: StepContext) -> str:
    body = ctx.quote.body
    identity = _module_identity(ctx)
    if not hmac.compare_digest(body.mr_signer_seam, identity.mrsigner):
        raise step_failure(f"TDX_MODULE_MISMATCH: mr_signer_seam {body.mr_signer_seam.hex()} != {identity.id} mrsigner")
    if any(body.seam_attributes) or body.seam_attributes != identity.attributes:
        raise step_failure(f"TDX_MODULE_MISMATCH: seam_attributes {body.seam_attributes.hex()} are not {identity.attributes.hex()}")
    if body.tee_tcb_svn[1] == 0:
        return "TDX 1.0 module (major version 0): identity from tdxModule, status OK"
    level = match_isv_level(identity.levels, body.tee_tcb_svn[0])
    if level is None:
        raise step_failure(f"TCB_NOT_SUPPORTED: module SVN {body.tee_tcb_svn[0]} is below every {identity.id} level")
    ctx.module_level = level
    return f"{identity.id} SVN {body.tee_tcb_svn[0]}: {level.status}"


def step_qe_signature(ctx: StepContext) -> str:
    leaf = ctx.pck_leaf
    assert leaf is not None
    cert = ctx.quote.certification
    if not ecdsa_raw_verify(leaf.public_key(), cert.qe_report_signature, cert.qe_report.raw):
        raise step_failure("the QE report signature does not verify with the PCK leaf key")
    return "QE report signed by the PCK leaf key"


def step_qe_binding(ctx: StepContext) -> str:
    cert = ctx.quote.certification
    expected = hashlib.sha256(ctx.quote.attestation_key + cert.qe_auth_data).digest()
    report_data = cert.qe_report.report_data
    if not hmac.compare_digest(report_data[:32], expected):
        raise step_failure("QE report_data[0:32] != SHA-256(attestation key || QE auth data)")
    if any(report_data[32:]):
        raise step_failure("QE report_data[32:64] is not zero")
    return "QE report binds the attestation key and QE auth data"


def step_qe_identity(ctx: StepContext) -> str:
    qe_id = _need_collateral(ctx).qe_identity
    qe = ctx.quote.certification.qe_report
    if not hmac.compare_digest(qe.mr_signer, qe_id.mrsigner) or qe.isv_prod_id != qe_id.isv_prod_id:
        raise step_failure(f"QE_IDENTITY_MISMATCH: mr_signer {qe.mr_signer.hex()} / isv_prod_id {qe.isv_prod_id}")
    if qe.misc_select & qe_id.miscselect_mask != qe_id.miscselect:
        raise step_failure(f"QE_IDENTITY_MISMATCH: misc_select {qe.misc_select:08x}")
    if bytes(a & m for a, m in zip(qe.attributes, qe_id.attributes_mask, strict=True)) != qe_id.attributes:
        raise step_failure(f"QE_IDENTITY_MISMATCH: attributes {qe.attributes.hex()}")
    if qe.attributes[0] & 0x02:
        raise step_failure("the QE runs in debug mode")
    level = match_isv_level(qe_id.levels, qe.isv_svn)
    if level is None:
        raise step_failure(f"TCB_NOT_SUPPORTED: QE isv_svn {qe.isv_svn} is below every TD_QE level")
    ctx.qe_level = level
    return f"TD_QE isv_svn {qe.isv_svn}: {level.status}"


def step_quote_signature(ctx: StepContext) -> str:
    q = ctx.quote
    if not ecdsa_raw_verify(_attestation_key(q), q.signature, q.signed_region):
        raise step_failure(f"the quote signature over bytes [0, {len(q.signed_region)}) does not verify with the attestation key")
    return f"signature over [0, {len(q.signed_region)}) verified"


def step_platform(ctx: StepContext) -> str:
    info, pck = _need_collateral(ctx).tcb_info, _need_pck(ctx)
    svn = ctx.quote.body.tee_tcb_svn
    level = match_platform_level(info.levels, pck.tcb_components, pck.pce_svn, svn)
    if level is None:
        raise step_failure(
            f"TCB_NOT_SUPPORTED: no TCB level matches (PCK SGX components {list(pck.tcb_components)}, "
            f"PCESVN {pck.pce_svn}, TEE TCB SVN {svn.hex()})"
        )
    ctx.platform_level = level
    return f"{level.status} (tcbDate {level.tcb_date.isoformat()})"


def step_converge(ctx: StepContext) -> str:
    _need_collateral(ctx)
    platform = ctx.platform_level
    assert platform is not None and ctx.qe_level is not None
    status = platform.status
    if ctx.module_level is not None:
        status = converge(status, ctx.module_level.status)
    body = ctx.quote.body
    if isinstance(body, TdReport15) and body.tee_tcb_svn2 != body.tee_tcb_svn:
        status = relaunch_status(status, _status_for(ctx, body.tee_tcb_svn2))
    status = converge(status, ctx.qe_level.status)
    ctx.status = status
    ctx.advisory_ids = union(
        platform.advisory_ids, ctx.module_level.advisory_ids if ctx.module_level else (), ctx.qe_level.advisory_ids
    )
    return f"tcb_status {status}" + (f", advisories {', '.join(ctx.advisory_ids)}" if ctx.advisory_ids else "")


def _status_for(ctx: StepContext, tee_tcb_svn: bytes) -> str:
    """Platform and module status as if the TD were relaunched on `tee_tcb_svn` (TDX 1.5 relaunch check)."""
    info, pck = _need_collateral(ctx).tcb_info, _need_pck(ctx)
    level = match_platform_level(info.levels, pck.tcb_components, pck.pce_svn, tee_tcb_svn)
    if level is None:
        return REVOKED
    status = level.status
    if tee_tcb_svn[1] > 0:
        identity = next((m for m in info.module_identities if m.id.upper() == f"TDX_{tee_tcb_svn[1]:02X}"), None)
        module = None if identity is None else match_isv_level(identity.levels, tee_tcb_svn[0])
        if module is None:
            return REVOKED
        status = converge(status, module.status)
    return status


def step_accept(ctx: StepContext) -> str:
    _need_collateral(ctx)
    if ctx.status == REVOKED:
        raise step_failure("the platform TCB is Revoked")
    return f"{ctx.status} is reported to the policy"


def _need_collateral(ctx: StepContext) -> VerifiedCollateral:
    if ctx.collateral is None:
        raise SkipStep("no collateral")
    return ctx.collateral


def _need_pck(ctx: StepContext) -> PckExtension:
    assert ctx.pck is not None
    return ctx.pck


def _attestation_key(quote: TdxQuote) -> object:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
    except ValueError:
        return None


def regularize(data: bytes, size: int) -> bytes:
    """Trustee's padding rule: zero-pad or truncate to `size` bytes."""
    return data[:size].ljust(size, b"\0")


def check_binding(actual: bytes, expected: bytes | None, size: int) -> str:
    name = "report_data" if size == REPORT_DATA_SIZE else "mr_config_id"
    if expected is None:
        raise SkipStep(f"no expected value: {name} not checked")
    if not hmac.compare_digest(actual, regularize(expected, size)):
        raise step_failure(f"{name} {actual.hex()} does not equal the expected value padded/truncated to {size} bytes")
    return f"{name} matches"


def replay(ctx: StepContext, event_log: bytes | None, replayer: EventLogReplayer | None) -> str:
    if event_log is None:
        raise SkipStep("no cc_eventlog in the evidence")
    if replayer is None:
        raise SkipStep("no event log replayer configured")
    try:
        result = replayer(event_log)
    except TrusteeError as exc:
        raise step_failure(f"event log: {exc.detail}") from None
    if result is None:
        raise SkipStep("event log parser not available in this build (attestation_service.core.eventlog missing)")
    for index, (replayed, quoted) in enumerate(zip(result.rtmrs, ctx.quote.body.rtmrs, strict=False)):
        if not hmac.compare_digest(replayed, quoted):
            raise step_failure(f"RTMR{index}: event log replays to {replayed.hex()}, the quote has {quoted.hex()}")
    ctx.uefi_event_logs = result.claims
    return f"RTMR0..3 reproduced by {len(result.claims)} events"


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


#: Upstream's names for the PCK SGX type (QVL supplemental `sgx_type`).
SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "Scalable with Integrity"}


def supplemental(ctx: StepContext) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    if ctx.uefi_event_logs is not None:
        claims["uefi_event_logs"] = ctx.uefi_event_logs
    if ctx.pck is not None and ctx.pck.platform_instance_id is not None:
        # Upstream reads the 16 bytes as a little-endian integer and prints it big-endian: reversed.
        claims["platform_instance_id"] = ctx.pck.platform_instance_id[::-1].hex()
    col = ctx.collateral
    if col is None or ctx.status is None or ctx.platform_level is None or ctx.pck is None:
        return claims
    claims.update({
        "tcb_status": ctx.status,
        "advisory_ids": list(ctx.advisory_ids),
        "collateral_expiration_status": "1" if ctx.expired else "0",
        "tcb_date": _iso(ctx.platform_level.tcb_date),
        "earliest_issue_date": _iso(col.earliest_issue),
        "latest_issue_date": _iso(col.latest_issue),
        "earliest_expiration_date": _iso(col.earliest_expiration),
        "tcb_eval_num": col.tcb_info.tcb_evaluation_data_number,
        "pck_crl_num": col.crl_number(col.pck_crl),
        "root_ca_crl_num": col.crl_number(col.root_crl),
        "sgx_type": SGX_TYPES.get(ctx.pck.sgx_type, f"Unknown ({ctx.pck.sgx_type})"),
        "platform_provider_id": ctx.pck.ppid.hex(),
        "fmspc": ctx.pck.fmspc.hex(),
    })
    for key, value in (("is_dynamic_platform", ctx.pck.dynamic_platform), ("is_cached_keys", ctx.pck.cached_keys),
                       ("is_smt_enabled", ctx.pck.smt_enabled)):
        if value is not None:
            claims[key] = value
    return claims
