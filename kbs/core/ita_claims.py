"""An EAR-shaped view of Intel Trust Authority claims, so one resource policy serves both token kinds.

ITA tokens (seed-systems.md 4.4) come in two layouts: v1 (`ver` 1.0.0)
with flat `tdx_*` / `sgx_*` / `attester_*` claims, and v2 (`ver` 2.0.0)
with the TEE claims nested under `"tdx"` or `"sgx"`. The resource policy
sees the token's claims unchanged, plus (when the token has no `submods`
of its own) `submods.cpu0` as our Attestation Service would have written
it:

* `ear.status`: from ITA's verdict. `attester_tcb_status` `UpToDate` is
  `affirming`; the statuses Intel marks as needing an update or a
  configuration change are `warning`; anything else (`Revoked`, unknown,
  missing) is `contraindicated`. A debuggable TD or enclave is
  `contraindicated` (as our default attestation policy decides), and
  policies ITA reported as unmatched (accepted because
  `allow_unmatched_policy = true`) cap an `affirming` verdict at `warning`;
* `ear.appraisal-policy-id`: `"intel-trust-authority"`;
* `ear.veraison.annotated-evidence`: `{"tdx": {...}}` (or `"sgx"`) with the
  quote fields under our AS's names (`quote.body.mr_td`, `rtmr_0`..,
  `td_attributes`, `tcb_status`, ...) and ITA's own claims under `ita`, and
  `runtime_data_claims` = ITA's `attester_runtime_data` (which holds the
  `tee-pubkey` and `nonce` the KBS sent), `report_data` the quote's.

Pure: claims in, claims out.
"""

from __future__ import annotations

from typing import Any

ITA_POLICY_ID = "intel-trust-authority"
AFFIRMING_TCB = frozenset({"UpToDate"})
WARNING_TCB = frozenset({
    "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded",
})
#: ITA `tdx_*` claim (without the prefix) -> our AS's `quote.body` name.
TDX_BODY = {
    "mrtd": "mr_td", "rtmr0": "rtmr_0", "rtmr1": "rtmr_1", "rtmr2": "rtmr_2", "rtmr3": "rtmr_3",
    "mrseam": "mr_seam", "mrsignerseam": "mrsigner_seam", "mrconfigid": "mr_config_id", "mrowner": "mr_owner",
    "mrownerconfig": "mr_owner_config", "report_data": "report_data", "tee_tcb_svn": "tcb_svn",
    "seam_attributes": "seam_attributes", "td_attributes": "td_attributes", "xfam": "xfam",
}
TD_ATTRIBUTE_FLAGS = ("debug", "septve_disable", "protection_keys", "key_locker", "perfmon")
_SHARED = ("attester_held_data", "attester_runtime_data", "attester_user_data", "attester_tcb_status", "attester_tcb_date",
           "attester_advisory_ids", "attester_type", "dbgstat")


def is_ita(claims: dict[str, Any]) -> bool:
    """ITA-shaped: TEE claims flat (`tdx_*`/`sgx_*`) or nested (`tdx`/`sgx` objects) with ITA attester claims."""
    if any(isinstance(claims.get(t), dict) and any(k.startswith((f"{t}_", "attester_")) for k in claims[t]) for t in ("tdx", "sgx")):
        return True
    return any(k.startswith(("tdx_", "sgx_")) for k in claims) or "attester_tcb_status" in claims


def tee_claims(claims: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(tee, its claims) from either layout; the v1 flat layout's attester claims are included."""
    for tee in ("tdx", "sgx"):
        nested = claims.get(tee)
        if isinstance(nested, dict):
            return tee, nested
    for tee in ("tdx", "sgx"):
        if any(k.startswith(f"{tee}_") for k in claims):
            flat = {k: v for k, v in claims.items() if k.startswith(f"{tee}_") or k in _SHARED}
            return tee, flat
    return None


def ear_status(tee: str, found: dict[str, Any], claims: dict[str, Any]) -> str:
    status = found.get("attester_tcb_status", claims.get("attester_tcb_status"))
    if found.get(f"{tee}_is_debuggable") is True or found.get("tdx_td_attributes_debug") is True:
        return "contraindicated"
    if status in AFFIRMING_TCB:
        unmatched = claims.get("policy_ids_unmatched")
        return "warning" if isinstance(unmatched, list) and unmatched else "affirming"
    if status in WARNING_TCB:
        return "warning"
    return "contraindicated"


def _tdx_annotation(found: dict[str, Any]) -> dict[str, Any]:
    body = {ours: found[f"tdx_{theirs}"] for theirs, ours in TDX_BODY.items() if f"tdx_{theirs}" in found}
    flags = {flag: found[f"tdx_td_attributes_{flag}"] for flag in TD_ATTRIBUTE_FLAGS if f"tdx_td_attributes_{flag}" in found}
    annotation: dict[str, Any] = {"quote": {"body": body}, "td_attributes": flags}
    if "attester_tcb_status" in found:
        annotation["tcb_status"] = found["attester_tcb_status"]
    if "attester_advisory_ids" in found:
        annotation["advisory_ids"] = found["attester_advisory_ids"]
    return annotation


def with_ear_view(claims: dict[str, Any]) -> dict[str, Any]:
    """`claims` plus `submods.cpu0` when they are ITA claims without `submods`; others unchanged."""
    if "submods" in claims or not is_ita(claims):
        return claims
    found = tee_claims(claims)
    if found is None:
        return claims
    tee, tee_part = found
    annotation = _tdx_annotation(tee_part) if tee == "tdx" else {}
    annotation["ita"] = tee_part
    annotated: dict[str, Any] = {tee: annotation}
    runtime = tee_part.get("attester_runtime_data", claims.get("attester_runtime_data"))
    if runtime is not None:
        annotated["runtime_data_claims"] = runtime
    report_data = tee_part.get(f"{tee}_report_data")
    if report_data is not None:
        annotated["report_data"] = report_data
    cpu0 = {
        "ear.status": ear_status(tee, tee_part, claims),
        "ear.appraisal-policy-id": ITA_POLICY_ID,
        "ear.veraison.annotated-evidence": annotated,
    }
    return {**claims, "submods": {"cpu0": cpu0}}
