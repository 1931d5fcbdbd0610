"""The tdx attester against a fake configfs-tsm: quote protocol, event log, errors, detection."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from attestation_service.core.eventlog import aael_event, parse_event_log

from guest.attesters import SampleAttester, TdxAttester, TdxPaths, detect_attesters
from guest.attesters.tdx import AAEL_ONLY_HEADER, build_cc_eventlog, trim_event_log
from trustee_common.errors import AttestationError, MalformedRequestError

from .conftest import FakeConfigfs

GCP_LOG_END = 18101  # where the real GCP CCEL's 0xFF padding starts


def paths(configfs: FakeConfigfs, tmp_path: Path) -> TdxPaths:
    return TdxPaths(tsm_report=configfs.root, ccel=tmp_path / "CCEL", aael=tmp_path / "aael", device=tmp_path / "tdx_guest")


def test_quote_over_padded_report_data(configfs: FakeConfigfs, tmp_path: Path, gcp_quote: bytes) -> None:
    report_data = bytes(range(48))
    evidence = TdxAttester(paths(configfs, tmp_path)).get_evidence(report_data)
    assert list(evidence) == ["cc_eventlog", "quote"]
    assert base64.b64decode(evidence["quote"], validate=True) == gcp_quote
    assert evidence["cc_eventlog"] is None
    assert configfs.inblobs == [report_data + bytes(16)]
    assert configfs.removed == configfs.created and len(configfs.created) == 1
    assert list(configfs.root.iterdir()) == []


def test_exactly_64_bytes_are_sent_unchanged(configfs: FakeConfigfs, tmp_path: Path) -> None:
    TdxAttester(paths(configfs, tmp_path)).get_evidence(b"\xaa" * 64)
    assert configfs.inblobs == [b"\xaa" * 64]


def test_report_data_longer_than_64_bytes_is_refused(configfs: FakeConfigfs, tmp_path: Path) -> None:
    with pytest.raises(MalformedRequestError, match="65 bytes, at most 64"):
        TdxAttester(paths(configfs, tmp_path)).get_evidence(bytes(65))
    assert configfs.created == []


def test_another_provider_is_refused_and_the_entry_removed(configfs: FakeConfigfs, tmp_path: Path) -> None:
    configfs.provider = "sev_guest\n"
    with pytest.raises(AttestationError, match="provider is 'sev_guest', not 'tdx_guest'"):
        TdxAttester(paths(configfs, tmp_path)).get_evidence(b"x")
    assert configfs.inblobs == []
    assert configfs.removed == configfs.created and len(configfs.created) == 1


def test_a_second_writer_is_detected_by_generation(configfs: FakeConfigfs, tmp_path: Path) -> None:
    configfs.generation_after_write = 2
    with pytest.raises(AttestationError, match="another writer"):
        TdxAttester(paths(configfs, tmp_path)).get_evidence(b"x")
    assert configfs.removed == configfs.created


def test_missing_configfs_is_a_clear_error(tmp_path: Path) -> None:
    attester = TdxAttester(TdxPaths(tsm_report=tmp_path / "absent", ccel=tmp_path / "CCEL", aael=tmp_path / "aael"))
    with pytest.raises(AttestationError, match="cannot create a report entry"):
        attester.get_evidence(b"x")


def test_cc_eventlog_is_the_trimmed_ccel_plus_end_flag(configfs: FakeConfigfs, tmp_path: Path, gcp_ccel: bytes) -> None:
    (tmp_path / "CCEL").write_bytes(gcp_ccel)
    evidence = TdxAttester(paths(configfs, tmp_path)).get_evidence(b"x")
    eventlog = base64.b64decode(evidence["cc_eventlog"], validate=True)
    assert eventlog == gcp_ccel[:GCP_LOG_END] + b"\xff" * 8
    assert len(parse_event_log(eventlog).events) == 43


def test_aael_is_appended_after_the_ccel(configfs: FakeConfigfs, tmp_path: Path, gcp_ccel: bytes) -> None:
    entry, _ = aael_event(4, "github.com/confidential-containers PullImage busybox")
    (tmp_path / "CCEL").write_bytes(gcp_ccel)
    (tmp_path / "aael").write_bytes(entry)
    eventlog = base64.b64decode(TdxAttester(paths(configfs, tmp_path)).get_evidence(b"x")["cc_eventlog"])
    assert eventlog == gcp_ccel[:GCP_LOG_END] + entry + b"\xff" * 8
    claim = parse_event_log(eventlog).to_claims()[-1]
    assert claim["details"]["data"] == {"domain": "github.com/confidential-containers", "operation": "PullImage", "content": "busybox"}


def test_aael_without_ccel_gets_the_fixed_header(configfs: FakeConfigfs, tmp_path: Path) -> None:
    entry, digest = aael_event(4, "coco.com op content")
    (tmp_path / "aael").write_bytes(entry)
    eventlog = base64.b64decode(TdxAttester(paths(configfs, tmp_path)).get_evidence(b"x")["cc_eventlog"])
    assert len(AAEL_ONLY_HEADER) == 69
    assert eventlog == AAEL_ONLY_HEADER + entry + b"\xff" * 8
    log = parse_event_log(eventlog)
    assert log.algorithms == {0x000C: 48, 0x0012: 32}
    assert log.events[0].digest(0x000C) == digest


def test_trimming_errors_are_attestation_errors() -> None:
    with pytest.raises(AttestationError, match="shorter than its first event header"):
        trim_event_log(b"\x00" * 10)
    with pytest.raises(AttestationError, match="no terminator"):
        trim_event_log(AAEL_ONLY_HEADER)
    assert build_cc_eventlog(None, None) is None
    assert trim_event_log(AAEL_ONLY_HEADER + bytes(8)) == AAEL_ONLY_HEADER


# --- detection ---------------------------------------------------------------


def _env(tmp_path: Path, tsm: Path, **extra: str) -> dict[str, str]:
    return {"TSM_REPORT_PATH": str(tsm), "TDX_GUEST_DEVICE": str(tmp_path / "tdx_guest"), "CCEL_PATH": str(tmp_path / "CCEL"), **extra}


def test_tdx_is_detected_through_configfs_tsm(configfs: FakeConfigfs, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="guest.attesters.base"):
        primary, devices = detect_attesters(_env(tmp_path, configfs.root, ENABLE_SAMPLE_DEVICE="1"))
    assert isinstance(primary, TdxAttester) and primary.tee == "tdx"
    assert primary.paths.tsm_report == configfs.root and primary.paths.ccel == tmp_path / "CCEL"
    assert [d.tee for d in devices] == ["sampledevice"]
    assert "using the tdx attester" in caplog.text and "configfs-tsm provider tdx_guest" in caplog.text
    assert configfs.removed == configfs.created  # the probe entry is removed too


def test_tdx_is_detected_through_the_device_node(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "tdx_guest").touch()
    with caplog.at_level(logging.INFO, logger="guest.attesters.base"):
        primary, _ = detect_attesters(_env(tmp_path, tmp_path / "no-configfs"))
    assert isinstance(primary, TdxAttester)
    assert "tdx_guest exists" in caplog.text


def test_another_tsm_provider_without_device_falls_back_to_sample(
    configfs: FakeConfigfs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configfs.provider = "arm_cca_guest\n"  # sev_guest is the snp attester's now (tests/guest_snp)
    with caplog.at_level(logging.INFO, logger="guest.attesters.base"):
        primary, devices = detect_attesters(_env(tmp_path, configfs.root))
    assert isinstance(primary, SampleAttester) and devices == []
    assert "using the sample attester" in caplog.text


def test_no_tee_at_all_is_sample(tmp_path: Path) -> None:
    primary, _ = detect_attesters(_env(tmp_path, tmp_path / "none"))
    assert primary.tee == "sample"
