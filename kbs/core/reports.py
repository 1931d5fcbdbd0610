"""Attestation reports: one signed record per `/attest` the KBS handled (docs/attestation-reports.md).

Pure: the facts of one attestation in, the report (a JSON-ready dict) out;
storage keys that list by instance id and time with nothing but sorted key
names; the admin query. Signing, the queue and storage are `kbs.reports`.

A report holds: `report_id`, `time` (RFC 3339, microseconds, UTC) and
`iat`, `outcome` (`attested`, `rejected` or `error`), `tee`, `instance_id`
and where it came from, the TEE's identity claims, one entry per EAR
submodule (policy id, status, trustworthiness vector), the SHA-256 of the
token (never the token: it is a bearer credential), the init-data digest
the AS bound, and for a failure the reason (`{"type", "detail"}`).

`instance_id` is, in this order: `[data] instance_id` of the init-data as
the AS verified it (the token's `init_data_claims`, bound to the TEE's
init-data field), `instance_id` of the init-data's `aa.toml` there; else
(no token: the attestation failed) the same two read from the init-data
the guest sent, marked `instance_id_verified = false`; else absent.

Keys (namespace `kbs_attestation_report`) are `<instance>/<time>-<id>`:
`<instance>` is `i` + base64url of the instance id, or `none`; `<time>`
is 16 decimal digits of microseconds since the epoch, so the sorted key
list is grouped by instance and ordered by time within it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from kbs.core.token import AttestationTokenVerifier, TokenTrust
from trustee_common.audit_events import clip, reason
from trustee_common.b64 import url_decode, url_encode
from trustee_common.bounded import loads_toml
from trustee_common.errors import MalformedRequestError, TokenVerifierError, TrusteeError

REPORT_NAMESPACE = "kbs_attestation_report"
REPORT_TYPE = "kbs-attestation-report+jwt"
NO_INSTANCE = "none"
TIME_DIGITS = 16
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_INSTANCE_ID = 256
MAX_INIT_DATA_BYTES = 256 * 1024
INSTANCE_KEY = "instance_id"
AA_CONFIG_KEY = "aa.toml"
#: Claims that identify what ran in the TEE, looked up in the TEE's claims and one level below.
IDENTITY_KEYS = frozenset({
    "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rtmr_0", "rtmr_1", "rtmr_2", "rtmr_3", "mr_seam",  # TDX
    "measurement", "host_data", "report_id", "chip_id", "policy",  # SNP
    "pcr_digest",  # TPM (and every `pcrNN`, `_is_identity`)
    "launch_digest", "svn",  # sample
})


@dataclass(frozen=True)
class AttestationFacts:
    """What `/attest` knew when it answered; `claims`: the token's claims when the KBS verified them."""

    time: float
    outcome: str
    tee: str | None
    token: str | None = None
    claims: Mapping[str, Any] | None = None
    error: TrusteeError | None = None
    init_data_toml: str | None = None


class ReportRecorder(Protocol):
    def record(self, facts: AttestationFacts) -> None:
        """Take the facts for a report; never blocks, never raises."""


def _instance_from_data(data: object) -> str | None:
    if not isinstance(data, Mapping):
        return None
    value = data.get(INSTANCE_KEY)
    if isinstance(value, str) and value:
        return value[:MAX_INSTANCE_ID]
    aa = data.get(AA_CONFIG_KEY)
    if isinstance(aa, str):
        try:
            aa = loads_toml(aa, AA_CONFIG_KEY, max_bytes=MAX_INIT_DATA_BYTES)
        except MalformedRequestError:
            return None
    if isinstance(aa, Mapping):
        value = aa.get(INSTANCE_KEY)
        if isinstance(value, str) and value:
            return value[:MAX_INSTANCE_ID]
    return None


def init_data_claims(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`init_data_claims` of the first submodule's annotated evidence that has them."""
    for submod in _submods(claims).values():
        annotated = submod.get("ear.veraison.annotated-evidence")
        if isinstance(annotated, Mapping) and isinstance(annotated.get("init_data_claims"), Mapping):
            found: Mapping[str, Any] = annotated["init_data_claims"]
            return found
    return None


def instance_id(claims: Mapping[str, Any] | None, init_data_toml: str | None) -> tuple[str | None, bool]:
    """(instance id, verified): from the token's init-data claims, else from the init-data sent (unverified)."""
    if claims is not None:
        verified = init_data_claims(claims)
        if verified is not None:
            return _instance_from_data(verified), True
    if init_data_toml is None:
        return None, False
    try:
        document = loads_toml(init_data_toml, "init-data", max_bytes=MAX_INIT_DATA_BYTES)
    except MalformedRequestError:
        return None, False
    return _instance_from_data(document.get("data")), False


def _submods(claims: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    submods = claims.get("submods")
    if not isinstance(submods, Mapping):
        return {}
    return {str(name): value for name, value in submods.items() if isinstance(value, Mapping)}


def _is_identity(key: str) -> bool:
    return key in IDENTITY_KEYS or (len(key) == 5 and key.startswith("pcr") and key[3:].isdigit())


def _identity(annotated: Mapping[str, Any], tee: str | None) -> dict[str, Any]:
    """The identity claims under the TEE's own key (and one level down, e.g. TDX `quote.body`)."""
    found: dict[str, Any] = {}
    tee_claims = annotated.get(tee) if tee is not None else None
    if not isinstance(tee_claims, Mapping):
        return found
    queue: list[tuple[str, Mapping[str, Any]]] = [("", tee_claims)]
    for prefix, level in queue:
        for key, value in level.items():
            if _is_identity(key) and not isinstance(value, Mapping):
                found[prefix + key] = value
            elif isinstance(value, Mapping) and prefix.count(".") < 2:
                queue.append((f"{prefix}{key}.", value))
    return found


def appraisals(claims: Mapping[str, Any], tee: str | None) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """(one entry per submodule, the primary TEE's identity claims, the init-data digest) from EAR claims."""
    entries: list[dict[str, Any]] = []
    identity: dict[str, Any] = {}
    init_digest = None
    for name, submod in _submods(claims).items():
        entry: dict[str, Any] = {"submod": clip(name)}
        for field, key in (("policy_id", "ear.appraisal-policy-id"), ("status", "ear.status"),
                           ("trust_vector", "ear.trustworthiness-vector")):
            if key in submod:
                entry[field] = submod[key]
        entries.append(entry)
        annotated = submod.get("ear.veraison.annotated-evidence")
        if isinstance(annotated, Mapping) and not identity:
            identity = _identity(annotated, tee)
            digest = annotated.get("init_data")
            init_digest = digest if isinstance(digest, str) else None
    return entries, identity, init_digest


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _micros(when: float) -> int:
    """`when` in whole microseconds: the one rounding both the listing key and the report's `time` use,
    so that `since=<a report's time>` always includes that report."""
    return max(0, round(when * 1_000_000))


def _rfc3339(when: float) -> str:
    moment = EPOCH + datetime.timedelta(microseconds=_micros(when))  # integer arithmetic: no second rounding
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_report(facts: AttestationFacts, report_id: str, claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """The report's claims; `claims`: the token's claims (verified, or read from our AS's token)."""
    instance, verified = instance_id(claims, facts.init_data_toml)
    report: dict[str, Any] = {
        "report_id": report_id,
        "iat": int(facts.time),
        "time": _rfc3339(facts.time),
        "outcome": facts.outcome,
        "tee": facts.tee,
    }
    if instance is not None:
        report["instance_id"] = instance
        report["instance_id_verified"] = verified
    if claims is not None:
        entries, identity, init_digest = appraisals(claims, facts.tee)
        report["identity"] = identity
        report["appraisals"] = entries
        if init_digest is not None:
            report["init_data_digest"] = init_digest
    if facts.token is not None:
        report["token_sha256"] = hashlib.sha256(facts.token.encode()).hexdigest()
    if facts.error is not None:
        report["reason"] = reason(facts.error)
    return report


# --- keys and listing ------------------------------------------------------------------


def instance_component(instance: str | None) -> str:
    return NO_INSTANCE if instance is None else "i" + url_encode(instance.encode())


def report_key(instance: str | None, when: float, report_id: str) -> str:
    return f"{instance_component(instance)}/{_micros(when):0{TIME_DIGITS}d}-{report_id}"


def _key_time(key: str) -> str:
    """The `<time>-<id>` part, which orders keys by time."""
    return key.rpartition("/")[2]


@dataclass(frozen=True)
class ReportQuery:
    instance_id: str | None = None
    #: Only reports at or after this many microseconds since the epoch.
    since_micros: int = 0
    limit: int = DEFAULT_LIMIT
    #: The last key of the previous page (from its `next_cursor`).
    after: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ReportQuery:
        unknown = set(query) - {"instance_id", "since", "limit", "cursor"}
        if unknown:
            raise MalformedRequestError(f"unknown query parameter {clip(sorted(unknown)[0])!r} (instance_id, since, limit, cursor)")
        instance = query.get("instance_id")
        if instance is not None and not 0 < len(instance) <= MAX_INSTANCE_ID:
            raise MalformedRequestError(f"instance_id: 1 to {MAX_INSTANCE_ID} characters")
        cursor = query.get("cursor")
        after = None if cursor is None else _decode_cursor(cursor)
        return cls(instance, _since(query.get("since")), _limit(query.get("limit")), after)


def _since(text: str | None) -> int:
    """`since`: seconds since the epoch, or an RFC 3339 time (`Z` or an offset)."""
    if text is None:
        return 0
    try:
        return _micros(float(text))
    except (ValueError, OverflowError):
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRequestError(f"since: {clip(text)!r} is neither seconds since the epoch nor an RFC 3339 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return max(0, (moment - EPOCH) // datetime.timedelta(microseconds=1))


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise MalformedRequestError(f"limit: an integer from 1 to {MAX_LIMIT}")
    return int(text)


def encode_cursor(key: str) -> str:
    return url_encode(key.encode())


def _decode_cursor(cursor: str) -> str:
    try:
        key = url_decode(cursor, "cursor").decode("ascii")
    except (MalformedRequestError, UnicodeDecodeError):
        raise MalformedRequestError("cursor: not a cursor this KBS returned") from None
    if "/" not in key or not _key_time(key)[:TIME_DIGITS].isdigit():
        raise MalformedRequestError("cursor: not a cursor this KBS returned")
    return key


def select_keys(keys: Sequence[str], query: ReportQuery) -> tuple[list[str], str | None]:
    """The page of keys, newest first, and the cursor of the next page (None on the last page).

    `keys` is the namespace's sorted key list: an instance's reports are one
    contiguous run of it, already in time order; without an instance the
    runs are merged by time."""
    if query.instance_id is not None:
        prefix = instance_component(query.instance_id) + "/"
        candidates = [k for k in keys if k.startswith(prefix)]
    else:
        candidates = sorted(keys, key=_key_time)
    floor = f"{query.since_micros:0{TIME_DIGITS}d}"
    newest_first = [k for k in reversed(candidates) if _key_time(k) >= floor]
    if query.after is not None:
        bound = _key_time(query.after)
        newest_first = [k for k in newest_first if (_key_time(k), k) < (bound, query.after)]
    page = newest_first[: query.limit]
    more = len(newest_first) > query.limit
    return page, encode_cursor(page[-1]) if more and page else None


# --- offline verification ---------------------------------------------------------------


def verify_report(report: str, anchors: Sequence[x509.Certificate], now: float) -> dict[str, Any]:
    """The claims of a signed report whose header `x5c` chains to one of `anchors` (x509 certificates); else
    `TokenVerifierError` with the reason. Pure: the caller reads the PEM file."""
    header, claims = AttestationTokenVerifier(TokenTrust(tuple(anchors))).verify_document(report, now)
    if header.get("typ") != REPORT_TYPE:
        raise TokenVerifierError(f"not an attestation report (typ {clip(str(header.get('typ')))!r})")
    return claims
