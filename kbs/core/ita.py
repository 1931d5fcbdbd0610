"""Intel Trust Authority as the KBS's attestation backend: the pure parts (seed-systems.md 4, trustee-server.md 4.4).

As upstream's `intel_ta` backend does:

* `/auth`: the KBS makes its own nonce (ITA's verifier nonce is not used).
  When the guest lists `supported-hash-algorithms`, the challenge's
  extra-params select the algorithm ITA binds with: `sha512` for `tdx`,
  `sha256` for `sgx` and `az-tdx-vtpm` (`challenge_extra_params`); without
  the list they stay `""` (the guest then uses its default).
* `/attest`: one `POST <base_url>/appraisal/v2/attest` with the v2
  composite body `{"policy_ids", "policy_must_match", "tdx"|"sgx": {"quote",
  "runtime_data", "event_log"?}}` (`attest_request`); with `api_version =
  "v1"` (ours) `POST <base_url>/appraisal/v1/attest` with the same fields
  flat: `{"quote", "runtime_data", "event_log"?, "policy_ids",
  "policy_must_match"}` (ITA answers a v1 token, its claims flat; the
  claims view reads both layouts). `runtime_data` is the
  base64 of the RFC 8785 canonical JSON of the runtime data the KBS binds
  (`{"additional-evidence", "nonce", "tee-pubkey"}`): exactly the bytes the
  guest hashed into REPORTDATA, so ITA's check SHA-512(runtime_data) ==
  REPORTDATA holds, and ITA echoes it back parsed as `attester_runtime_data`.
  `policy_must_match` is true when `policy_ids` is non-empty and
  `allow_unmatched_policy` is not true.
* The token ITA returns is verified by the caller; `check_policies` then
  refuses a token listing `policy_ids_unmatched` unless
  `allow_unmatched_policy` is true (ITA should already have refused it when
  `policy_must_match` was sent; this does not rely on it).

Errors (`error_for_status`): 401/403 from ITA is the KBS's API key being
refused (503 `UpstreamError` telling the operator), 400 is ITA rejecting
the evidence (401 `AttestationError` with ITA's message), anything else
is 503 naming ITA. The API key never appears in any message.
"""

from __future__ import annotations

import json
from typing import Any

from kbs.core.evidence import EvidenceItem
from trustee_common.b64 import std_encode, url_decode
from trustee_common.canonical import canonical_json
from trustee_common.errors import AttestationError, MalformedRequestError, TrusteeError, UpstreamError, clip

ITA = "Intel Trust Authority"
#: `api_version` -> the attest endpoint under base_url (v2: upstream's; v1: ours, for older ITA deployments).
ATTEST_PATHS = {"v1": "/appraisal/v1/attest", "v2": "/appraisal/v2/attest"}
DEFAULT_API_VERSION = "v2"
#: The hash algorithm ITA binds the runtime data with, per tee (upstream's `generate_challenge`).
BINDING_HASH = {"tdx": "sha512", "sgx": "sha256", "az-tdx-vtpm": "sha256"}
SUPPORTED_TEES = ("tdx", "sgx")
MAX_MESSAGE = 200


def challenge_extra_params(tee: str, extra_params: Any) -> Any:
    """`""`, or `{"selected-hash-algorithm": ...}` when the guest listed its supported algorithms."""
    if not isinstance(extra_params, dict) or "supported-hash-algorithms" not in extra_params:
        return ""
    listed = extra_params["supported-hash-algorithms"]
    if not isinstance(listed, list):
        raise MalformedRequestError(f"{ITA}: extra-params.supported-hash-algorithms must be an array")
    names = {item.lower() for item in listed if isinstance(item, str)}
    needed = BINDING_HASH.get(tee)
    if needed is None:
        raise MalformedRequestError(f"{ITA}: tee {tee!r} is not supported (only {', '.join(SUPPORTED_TEES)})")
    if needed not in names:
        raise MalformedRequestError(f"{ITA}: tee {tee} binds with {needed}, which the guest does not support")
    return {"selected-hash-algorithm": needed}


def _evidence(item: EvidenceItem) -> dict[str, Any]:
    try:
        value = json.loads(url_decode(item.evidence, "evidence"))
    except (ValueError, MalformedRequestError):
        raise MalformedRequestError(f"{ITA}: {item.tee} evidence is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("quote"), str) or not value["quote"]:
        raise MalformedRequestError(f'{ITA}: {item.tee} evidence needs a base64 "quote"')
    return value


def runtime_data_bytes(item: EvidenceItem) -> bytes:
    """The canonical JSON of the runtime data the KBS binds (what the guest hashed into its report data)."""
    return canonical_json(json.loads(item.structured_runtime_data))


def attest_request(items: list[EvidenceItem], policy_ids: tuple[str, ...], allow_unmatched_policy: bool,
                   api_version: str = DEFAULT_API_VERSION) -> dict[str, Any]:
    """The attest body (`api_version` "v2": nested under the tee; "v1": flat) for the primary evidence
    (additional evidence is refused)."""
    primary = items[0]
    if primary.tee not in SUPPORTED_TEES:
        raise AttestationError(f"{ITA}: tee {primary.tee!r} is not supported (only {', '.join(SUPPORTED_TEES)})")
    if len(items) > 1:
        others = ", ".join(sorted({i.tee for i in items[1:]}))
        raise AttestationError(f"{ITA}: additional evidence ({others}) is not supported")
    evidence = _evidence(primary)
    part: dict[str, Any] = {"quote": evidence["quote"], "runtime_data": std_encode(runtime_data_bytes(primary))}
    event_log = evidence.get("cc_eventlog")
    if isinstance(event_log, str) and event_log:
        part["event_log"] = event_log
    policies = {"policy_ids": list(policy_ids), "policy_must_match": bool(policy_ids) and not allow_unmatched_policy}
    if api_version == "v1":
        return {**part, **policies}
    return {**policies, primary.tee: part}


def check_policies(claims: dict[str, Any], allow_unmatched_policy: bool) -> None:
    """Refuse a token that lists unmatched ITA policies, unless they are allowed."""
    unmatched = claims.get("policy_ids_unmatched")
    if allow_unmatched_policy or not unmatched:
        return
    ids = [str(p.get("id", "?")) if isinstance(p, dict) else str(p) for p in unmatched] if isinstance(unmatched, list) else []
    raise AttestationError(f"{ITA}: the evidence does not match policies {clip(', '.join(ids))} (allow_unmatched_policy = false)")


def error_message(body: bytes) -> str:
    """ITA's `{"error": ...}` message (or the start of its body), clipped."""
    try:
        value = json.loads(body)
        text = value.get("error") if isinstance(value, dict) else None
    except ValueError:
        text = None
    if not isinstance(text, str):
        text = body[:MAX_MESSAGE].decode("utf-8", "replace")
    return clip(text.strip(), MAX_MESSAGE) or "no message"


def error_for_status(status: int, body: bytes) -> TrusteeError:
    message = error_message(body)
    if status in (401, 403):
        return UpstreamError(f"{ITA} refused the KBS's API key (HTTP {status}): check attestation_service.api_key")
    if status == 400:
        return AttestationError(f"{ITA} rejected the evidence: {message}")
    return UpstreamError(f"{ITA} answered HTTP {status}: {message}")
