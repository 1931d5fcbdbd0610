"""The pure parts: JWK-set parsing, the ITA request and verdict, the EAR-shaped view; the bounded refresh."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kbs.config import parse_kbs_config
from kbs.core.evidence import EvidenceItem
from kbs.core.ita import attest_request, challenge_extra_params, check_policies, error_for_status
from kbs.core.ita_claims import with_ear_view
from kbs.core.jwk_set import check_source, parse_jwk_set
from kbs.jwks import JwkSetSource
from tests.ita_standin import new_ca, new_signing_key
from trustee_common.b64 import url_encode
from trustee_common.errors import AttestationError, ConfigError, MalformedRequestError, UpstreamError


@pytest.fixture(scope="module")
def keys() -> Any:
    ca = new_ca()
    return new_signing_key(*ca), new_signing_key(*ca)


def jwks(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def test_jwk_set_keys_by_kid_and_alg(keys: Any) -> None:
    one, _ = keys
    parsed = parse_jwk_set(jwks(one.jwk("PS384"), one.jwk("RS256")), "set")
    assert set(parsed.keys) == {(one.kid, "PS384"), (one.kid, "RS256")}
    key = parsed.keys[(one.kid, "PS384")]
    assert key.current_at(key.not_before + 1) and not key.current_at(key.not_after + 1)


def test_jwk_set_skips_bad_keys(keys: Any) -> None:
    one, two = keys
    mismatched = {**one.jwk("PS384"), "x5c": two.jwk("PS384")["x5c"], "kid": "mismatch"}
    broken_chain = {**one.jwk("PS384"), "x5c": [one.jwk("PS384")["x5c"][0], two.jwk("PS384")["x5c"][0]], "kid": "broken"}
    wrong_alg = {**one.jwk("PS384"), "alg": "ES256", "kid": "alg"}
    symmetric = {"kty": "oct", "k": "AAAA", "kid": "oct", "alg": "HS256"}
    parsed = parse_jwk_set(jwks(one.jwk("PS384"), mismatched, broken_chain, wrong_alg, symmetric), "set")
    assert list(parsed.keys) == [(one.kid, "PS384")]
    reasons = " | ".join(parsed.skipped)
    assert "x5c[0] does not hold" in reasons and "not signed by the next" in reasons
    assert "does not fit" in reasons and "HS256" in reasons
    with pytest.raises(ConfigError, match="no usable key"):
        parse_jwk_set(jwks(symmetric), "set")
    with pytest.raises(ConfigError, match="non-empty"):
        parse_jwk_set(b'{"keys": []}', "set")


@pytest.mark.parametrize("source", ["http://example.com/certs", "ftp://x/y", "file://host/etc/x", ""])
def test_bad_sources(source: str) -> None:
    with pytest.raises(ConfigError):
        check_source(source, "attestation_token.trusted_jwk_sets")


def test_challenge_extra_params() -> None:
    listed = {"supported-hash-algorithms": ["SHA384", "sha512"]}
    assert challenge_extra_params("tdx", listed) == {"selected-hash-algorithm": "sha512"}
    assert challenge_extra_params("tdx", "") == ""
    assert challenge_extra_params("tdx", {}) == ""
    with pytest.raises(MalformedRequestError, match="sha256"):
        challenge_extra_params("sgx", listed)
    with pytest.raises(MalformedRequestError, match="not supported"):
        challenge_extra_params("snp", listed)


def item(tee: str = "tdx", evidence: dict[str, Any] | None = None) -> EvidenceItem:
    evidence = evidence if evidence is not None else {"quote": "cXVvdGU=", "cc_eventlog": "bG9n"}
    runtime = json.dumps({"tee-pubkey": {"kty": "EC", "y": "b", "x": "a"}, "nonce": "n", "additional-evidence": ""})
    return EvidenceItem(tee, url_encode(json.dumps(evidence).encode()), runtime, "sha384", None)


def test_attest_request() -> None:
    body = attest_request([item()], ("p1",), False)
    assert body["policy_ids"] == ["p1"] and body["policy_must_match"] is True
    assert body["tdx"]["quote"] == "cXVvdGU=" and body["tdx"]["event_log"] == "bG9n"
    assert base64.b64decode(body["tdx"]["runtime_data"]) == (
        b'{"additional-evidence":"","nonce":"n","tee-pubkey":{"kty":"EC","x":"a","y":"b"}}')
    assert attest_request([item()], ("p1",), True)["policy_must_match"] is False
    assert attest_request([item()], (), False)["policy_must_match"] is False
    with pytest.raises(AttestationError, match="not supported"):
        attest_request([item("snp")], (), False)
    with pytest.raises(AttestationError, match="additional evidence"):
        attest_request([item(), item("nvidia")], (), False)
    with pytest.raises(MalformedRequestError, match="quote"):
        attest_request([item(evidence={"td_quote": "x"})], (), False)


def test_attest_request_v1() -> None:
    """v1: the v2 body's fields flat, the tee not named."""
    v2 = attest_request([item()], ("p1",), False)
    v1 = attest_request([item()], ("p1",), False, "v1")
    assert v1 == {**v2["tdx"], "policy_ids": ["p1"], "policy_must_match": True}


def test_policies_and_errors() -> None:
    claims = {"policy_ids_unmatched": [{"id": "p2", "version": "v1"}]}
    with pytest.raises(AttestationError, match="p2"):
        check_policies(claims, False)
    check_policies(claims, True)
    check_policies({"policy_ids_matched": [{"id": "p1"}]}, False)
    assert isinstance(error_for_status(401, b'{"error":"Invalid API key"}'), UpstreamError)
    bad = error_for_status(400, b'{"error":"quote verification failed"}')
    assert isinstance(bad, AttestationError) and "quote verification failed" in bad.detail
    assert "HTTP 502" in error_for_status(502, b"<html>").detail


def tdx_v1(status: str = "UpToDate", **extra: Any) -> dict[str, Any]:
    return {"ver": "1.0.0", "iss": "Intel Trust Authority", "tdx_mrtd": "aa", "tdx_rtmr0": "bb", "tdx_report_data": "cc",
            "tdx_td_attributes_debug": False, "tdx_is_debuggable": False, "attester_tcb_status": status,
            "attester_runtime_data": {"tee-pubkey": {"kty": "EC"}}, **extra}


def cpu0(claims: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = with_ear_view(claims)["submods"]["cpu0"]
    return value


def test_ear_view_v1_and_v2() -> None:
    flat = cpu0(tdx_v1())
    nested = cpu0({"ver": "2.0.0", "tdx": {k: v for k, v in tdx_v1().items() if k not in ("ver", "iss")}})
    for view in (flat, nested):
        assert view["ear.status"] == "affirming"
        annotated = view["ear.veraison.annotated-evidence"]
        assert annotated["tdx"]["quote"]["body"] == {"mr_td": "aa", "rtmr_0": "bb", "report_data": "cc"}
        assert annotated["tdx"]["tcb_status"] == "UpToDate"
        assert annotated["runtime_data_claims"] == {"tee-pubkey": {"kty": "EC"}}
        assert annotated["report_data"] == "cc"


@pytest.mark.parametrize(("claims", "status"), [
    (tdx_v1("OutOfDate"), "warning"),
    (tdx_v1("SWHardeningNeeded"), "warning"),
    (tdx_v1("Revoked"), "contraindicated"),
    (tdx_v1(""), "contraindicated"),
    (tdx_v1(tdx_is_debuggable=True), "contraindicated"),
    (tdx_v1(policy_ids_unmatched=[{"id": "p"}]), "warning"),
])
def test_ear_status(claims: dict[str, Any], status: str) -> None:
    assert cpu0(claims)["ear.status"] == status


def test_ear_view_leaves_other_tokens_alone() -> None:
    ear = {"submods": {"cpu0": {"ear.status": "affirming"}}, "tdx_mrtd": "x"}
    assert with_ear_view(ear) is ear
    other = {"iss": "someone", "sub": "x"}
    assert with_ear_view(other) is other


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_refresh_is_bounded(tmp_path: Path, keys: Any) -> None:
    one, two = keys
    path = tmp_path / "certs.json"
    path.write_bytes(jwks(one.jwk("PS384")))
    clock = Clock()
    source = JwkSetSource((f"file://{path}",), "set", min_refresh_seconds=60, monotonic=clock)
    await source.load()
    path.write_bytes(jwks(two.jwk("PS384")))
    await source.refresh()
    assert source.fetches == 1 and source.ring.has_kid(one.kid)
    clock.now += 60
    await source.refresh()
    await source.refresh()
    assert source.fetches == 2 and source.ring.has_kid(two.kid) and not source.ring.has_kid(one.kid)
    path.write_text("not json")
    clock.now += 60
    await source.refresh()  # a failed refresh keeps the keys
    assert source.fetches == 3 and source.ring.has_kid(two.kid)


async def test_unreadable_source_stops_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        await JwkSetSource((str(tmp_path / "missing.json"),), "attestation_token.trusted_jwk_sets").load()


def ita_table(**extra: Any) -> dict[str, Any]:
    table = {"type": "intel_ta", "base_url": "https://api.trustauthority.intel.com", "api_key": "secret-key-1",
             "certs_file": "https://portal.trustauthority.intel.com", **extra}
    return {"http_server": {"insecure_http": True}, "admin": {"authorization_mode": "DenyAll"}, "attestation_service": table}


def test_config_keys(tmp_path: Path) -> None:
    config = parse_kbs_config(ita_table(policy_ids=["p1"], timeout=3), default_dir=tmp_path)
    ita = config.attestation_service.intel_ta
    assert ita is not None and ita.policy_ids == ("p1",) and ita.allow_unmatched_policy is False
    assert config.attestation_service.session_timeout_minutes == 3
    assert "secret-key-1" not in repr(config)
    assert ita.api_version == "v2"
    ita = parse_kbs_config(ita_table(api_version="v1"), default_dir=tmp_path).attestation_service.intel_ta
    assert ita is not None and ita.api_version == "v1"


@pytest.mark.parametrize(("extra", "words"), [
    ({"base_url": "http://api.example"}, "must be an https:// URL"),
    ({"api_key": " "}, "api_key is empty"),
    ({"certs_file": "http://portal.example/certs"}, "certs_file"),
    ({"as_addr": "http://127.0.0.1:1"}, "as_addr"),
    ({"jwks_refresh_interval_seconds": -1}, "jwks_refresh_interval_seconds"),
    ({"unknown_key": 1}, "unknown_key"),
    ({"api_version": "v3"}, "api_version must be"),
    ({"api_version": 2}, "api_version"),
])
def test_bad_config_keys_are_named(tmp_path: Path, extra: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_kbs_config(ita_table(**extra), default_dir=tmp_path)
    data = ita_table()
    del data["attestation_service"]["certs_file"]
    with pytest.raises(ConfigError, match="certs_file"):
        parse_kbs_config(data, default_dir=tmp_path)
