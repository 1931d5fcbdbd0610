"""`kbs.core.reports` (pure) and the `[attestation_reports]` table: instance-id precedence, keys, paging, the query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbs.config import parse_kbs_config
from kbs.core.reports import (
    MAX_LIMIT,
    AttestationFacts,
    ReportQuery,
    build_report,
    encode_cursor,
    instance_id,
    report_key,
    select_keys,
)
from kbs.core.resource_policy import policy_input
from trustee_common.errors import ConfigError, EvidenceError, MalformedRequestError

TOML = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\ninstance_id = "{}"\n'
AA_ONLY = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = \'\'\'\ninstance_id = "from-aa"\n\'\'\'\n'


def token_claims(init_data_claims: dict[str, Any] | None) -> dict[str, Any]:
    annotated: dict[str, Any] = {"tdx": {"quote": {"body": {"mr_td": "aa", "rtmr_0": "bb", "report_data": "cc"}}}}
    if init_data_claims is not None:
        annotated.update(init_data="ZGln", init_data_claims=init_data_claims)
    return {"submods": {"cpu0": {"ear.status": "affirming", "ear.trustworthiness-vector": {"hardware": 2},
                                 "ear.appraisal-policy-id": "default", "ear.veraison.annotated-evidence": annotated}}}


def test_instance_id_prefers_the_verified_claims_then_the_aa_config_then_the_sent_init_data() -> None:
    assert instance_id(token_claims({"instance_id": "verified"}), TOML.format("sent")) == ("verified", True)
    assert instance_id(token_claims({"aa.toml": {"instance_id": "from-aa"}}), None) == ("from-aa", True)
    assert instance_id(None, TOML.format("sent")) == ("sent", False)
    assert instance_id(None, AA_ONLY) == ("from-aa", False)
    assert instance_id(None, "not toml [") == (None, False)
    assert instance_id(token_claims(None), None) == (None, False)


def test_a_report_carries_identity_appraisals_and_the_reason_never_the_token() -> None:
    facts = AttestationFacts(1_700_000_000.25, "attested", "tdx", token="secret-token-text", claims=token_claims({"instance_id": "x"}))
    report = build_report(facts, "00ff", facts.claims)
    assert report["identity"] == {"quote.body.mr_td": "aa", "quote.body.rtmr_0": "bb"}
    assert report["appraisals"] == [{"submod": "cpu0", "policy_id": "default", "status": "affirming", "trust_vector": {"hardware": 2}}]
    assert report["time"] == "2023-11-14T22:13:20.250000Z" and report["init_data_digest"] == "ZGln"
    assert "secret-token-text" not in str(report)
    failed = build_report(AttestationFacts(1.0, "rejected", "tdx", error=EvidenceError("bad quote")), "01", None)
    assert failed["reason"] == {"type": EvidenceError.variant, "detail": "bad quote"}
    assert "instance_id" not in failed and "appraisals" not in failed


def test_keys_page_newest_first_per_instance_and_across_instances() -> None:
    keys = sorted([report_key("a", t, f"{t:02d}") for t in (1, 2, 3, 4)] + [report_key(None, 2.5, "zz"), report_key("b", 5, "bb")])
    page, cursor = select_keys(keys, ReportQuery("a", limit=3))
    assert [k[-2:] for k in page] == ["04", "03", "02"] and cursor == encode_cursor(page[-1])
    rest, end = select_keys(keys, ReportQuery("a", limit=3, after=page[-1]))
    assert [k[-2:] for k in rest] == ["01"] and end is None
    every, _ = select_keys(keys, ReportQuery(limit=10))
    assert [k[-2:] for k in every] == ["bb", "04", "03", "zz", "02", "01"]
    since, _ = select_keys(keys, ReportQuery(since_micros=3_000_000))
    assert [k[-2:] for k in since] == ["bb", "04", "03"]


def test_the_query_is_checked() -> None:
    assert ReportQuery.parse({"since": "1970-01-01T00:00:02Z", "limit": "7"}) == ReportQuery(None, 2_000_000, 7)
    assert ReportQuery.parse({"since": "2.5"}).since_micros == 2_500_000
    cursor = encode_cursor(report_key("a", 1, "01"))
    assert ReportQuery.parse({"cursor": cursor}).after == report_key("a", 1, "01")
    for bad in ({"limit": "0"}, {"limit": str(MAX_LIMIT + 1)}, {"limit": "x"}, {"since": "yesterday"}, {"cursor": "Zm9v"},
                {"instance_id": ""}, {"other": "1"}):
        with pytest.raises(MalformedRequestError):
            ReportQuery.parse(bad)


def test_the_init_data_alias_reads_cpu0s_init_data_claims_only_when_used() -> None:
    claims = token_claims({"instance_id": "a"})
    assert policy_input(claims, "package policy\nallow if input.init_data.instance_id == \"a\"")["init_data"] == {"instance_id": "a"}
    assert "init_data" not in policy_input(claims, "package policy\nallow if input.submods.cpu0")
    assert "init_data" not in policy_input(token_claims(None), "package policy\nallow if input.init_data")


BASE: dict[str, Any] = {"http_server": {"insecure_http": True}, "attestation_token": {"insecure_header_jwk": True},
                        "admin": {"authorization_mode": "InsecureAllowAll"}}


def test_the_table_enables_reports_and_checks_its_keys(tmp_path: Path) -> None:
    assert parse_kbs_config(dict(BASE), default_dir=tmp_path).attestation_reports.enabled is False
    config = parse_kbs_config({**BASE, "attestation_reports": {"signing_key": "k.pem", "retention_days": 2}}, default_dir=tmp_path)
    assert config.attestation_reports.enabled and config.attestation_reports.retention_days == 2
    for table, key in (({"retention_days": 0}, "retention_days"), ({"cert_chain": "c.pem"}, "cert_chain"),
                       ({"queue_size": 0}, "queue_size"), ({"enable": True}, "enable"), ({"signing_key": 1}, "signing_key")):
        with pytest.raises(ConfigError, match=key):
            parse_kbs_config({**BASE, "attestation_reports": table}, default_dir=tmp_path)


def test_since_a_reports_own_time_includes_that_report() -> None:
    """The key and the printed `time` round the same way, so listing `since=<time>` never skips the report itself."""
    import random

    from kbs.core.reports import _key_time, _rfc3339

    rng = random.Random(7)
    for _ in range(20_000):
        when = 1_764_820_000 + rng.random() * 10_000_000
        key_micros = int(_key_time(report_key("c", when, "id"))[:16])
        assert ReportQuery.parse({"since": _rfc3339(when)}).since_micros == key_micros
    assert ReportQuery.parse({"since": "1764820000.5"}).since_micros == 1_764_820_000_500_000
    for bad in ("nan", "inf", "yesterday"):
        with pytest.raises(MalformedRequestError, match="since"):
            ReportQuery.parse({"since": bad})
