"""Pure parts of the audit and observability code: request ids, log lines, audit events and config keys."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from attestation_service.config import AsConfig

from kbs.config import parse_kbs_config
from kbs.core.audit_events import MAX_TEXT, admin_event, ear_summary, reference, release_event
from rvps.config import RvpsConfig
from trustee_common.audit import AuditConfig, AuditLog, event_line
from trustee_common.errors import ConfigError, PolicyDenyError, StorageError
from trustee_common.logsetup import JsonFormatter, RequestIdFilter
from trustee_common.requestid import REQUEST_ID, accept_request_id, from_metadata, outgoing_metadata


@pytest.mark.parametrize("good", ["a", "trace-1.2:3_x", "x" * 64])
def test_well_formed_incoming_ids_are_kept(good: str) -> None:
    assert accept_request_id(good) == good


@pytest.mark.parametrize("bad", [None, "", "x" * 65, "has space", "line\nbreak", '{"json":1}', "é"])
def test_other_incoming_ids_are_replaced(bad: str | None) -> None:
    replaced = accept_request_id(bad)
    assert replaced != bad and len(replaced) == 32


def test_metadata_round_trip_only_inside_a_request() -> None:
    assert outgoing_metadata() == ()
    token = REQUEST_ID.set("abc")
    try:
        assert outgoing_metadata() == (("x-request-id", "abc"),)
        assert from_metadata(outgoing_metadata()) == "abc"
    finally:
        REQUEST_ID.reset(token)
    assert from_metadata((("x-request-id", "bad id"),)) is None
    assert from_metadata(None) is None


def test_json_log_line_carries_the_request_id_and_escapes_the_message() -> None:
    record = logging.LogRecord("kbs.x", logging.INFO, __file__, 1, 'evil "%s"', ("\n{injected}",), None)
    token = REQUEST_ID.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter("kbs").format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "rid-1" and parsed["message"] == 'evil "\n{injected}"' and parsed["service"] == "kbs"


def test_audit_line_is_one_compact_json_object() -> None:
    line = event_line({"event": "x", "detail": "a\nb"}, 0.0)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"ts": "1970-01-01T00:00:00.000Z", "event": "x", "detail": "a\nb"}


def test_audit_log_appends_and_raises_on_write_failure(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    failures: list[int] = []
    log = AuditLog(AuditConfig(path, "always"), on_failure=lambda: failures.append(1))
    log.record({"event": "one"})
    log.close()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    again = AuditLog(AuditConfig(path, "never"))
    again.record({"event": "two"})
    again.close()
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["one", "two"]
    if os.path.exists("/dev/full"):
        full = AuditLog(AuditConfig(Path("/dev/full"), "never"), on_failure=lambda: failures.append(1))
        with pytest.raises(StorageError):
            full.record({"event": "lost?"})
        full.record_or_log({"event": "logged"})
        full.close()
        assert len(failures) == 2


def test_ear_summary_reads_tees_and_statuses_and_ignores_junk() -> None:
    claims = {"submods": {"cpu0": {"ear.status": "affirming", "ear.veraison.annotated-evidence": {"tdx": {}, "report_data": "x"}},
                          "gpu0": {"ear.status": "warning", "ear.veraison.annotated-evidence": {"nvidia": {}}},
                          "junk": 7}}
    assert ear_summary(claims) == {"tee": ["tdx", "nvidia"], "ear_status": {"cpu0": "affirming", "gpu0": "warning"}}
    assert ear_summary({"submods": "no"}) == {}


def test_events_clip_client_text_and_hide_credentials() -> None:
    session = "0123456789abcdef0123456789abcdef"
    event = release_event("denied", {"session_ref": reference(session)}, {"resource": "a/b/c"}, PolicyDenyError("x" * 1000))
    assert session not in json.dumps(event) and len(event["session_ref"]) == 16
    assert len(event["reason"]["detail"]) <= MAX_TEXT + 3
    admin = admin_event(action="a", method="GET", endpoint="/kbs/v0/" + "y" * 1000, outcome="ok", origin={},
                        target={"reference_value_id": "z" * 1000})
    assert len(admin["endpoint"]) <= MAX_TEXT + 3 and len(admin["target"]["reference_value_id"]) <= MAX_TEXT + 3


BASE = {
    "http_server": {"insecure_http": True},
    "admin": {"authorization_mode": "InsecureAllowAll"},
    "attestation_token": {"insecure_header_jwk": True},
}


def test_observability_keys_parse(tmp_path: Path) -> None:
    config = parse_kbs_config({**BASE, "audit": {"path": "logs/a.jsonl", "fsync": "always"}, "metrics": {"address": "127.0.0.1:9100"},
                               "logging": {"access_log": True, "format": "json"}}, default_dir=tmp_path)
    obs = config.observability
    assert obs.audit is not None and obs.audit.path == tmp_path / "logs" / "a.jsonl" and obs.audit.fsync == "always"
    assert obs.metrics_address is not None and obs.metrics_address.port == 9100
    assert obs.access_log and obs.log_format == "json"
    default = parse_kbs_config(dict(BASE), default_dir=tmp_path).observability
    assert default.audit is None and default.metrics_address is None and not default.access_log


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"audit": {}}, "audit.path is required"),
        ({"audit": {"path": "a", "fsync": "sometimes"}}, "audit.fsync 'sometimes'"),
        ({"audit": {"path": "a", "rotate": True}}, "unknown key(s) in config.audit: rotate"),
        ({"metrics": {"address": "localhost"}}, "metrics.address"),
        ({"logging": {"format": "xml"}}, "logging.format 'xml'"),
    ],
)
def test_bad_observability_keys_are_refused(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_kbs_config({**BASE, **extra}, default_dir=tmp_path)
    assert message in error.value.detail


@pytest.mark.parametrize("service", ["as", "rvps"])
def test_as_and_rvps_metrics_address_is_checked(tmp_path: Path, service: str) -> None:
    load = AsConfig.load if service == "as" else RvpsConfig.load
    config = tmp_path / "c.toml"
    config.write_text('[metrics]\naddress = "127.0.0.1:9464"\n')
    assert load(config).metrics_address == "127.0.0.1:9464"
    config.write_text('[metrics]\naddress = "no-port"\n')
    with pytest.raises(ConfigError, match=r"metrics\.address"):
        load(config)
    config.write_text('[metrics]\nport = 1\n')
    with pytest.raises(ConfigError, match="port"):
        load(config)
