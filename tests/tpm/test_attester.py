"""The tpm attester: detection from the environment, and real quotes from a private swtpm verified by the `tpm` verifier."""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest.attesters import detect_attesters
from guest.attesters.tpm import DEFAULT_AK_HANDLE, TpmAttester, TpmSettings
from tests.e2e_tpm.swtpm import Swtpm
from tests.tpm.test_verify import evaluate_registered  # the swtpm's AK registered as trusted_aks

NOW = datetime.datetime.now(datetime.UTC)


def test_detection_from_env(caplog: pytest.LogCaptureFixture) -> None:
    env = {"AA_TPM_TCTI": "swtpm:host=127.0.0.1,port=1", "AA_TPM_AK_HANDLE": "0x81010003",
           "TSM_REPORT_PATH": "/nonexistent", "TDX_GUEST_DEVICE": "/nonexistent"}
    with caplog.at_level(logging.INFO):
        primary, devices = detect_attesters(env)
    assert primary.tee == "tpm" and devices == []
    assert isinstance(primary, TpmAttester) and primary.settings.ak_handle == 0x81010003
    assert "using the tpm attester" in caplog.text
    assert TpmSettings.from_env({"AA_TPM_DEVICE": "/dev/tpmrm9", "AA_TPM_EVENTLOG": "/x"}) == TpmSettings(
        "device:/dev/tpmrm9", DEFAULT_AK_HANDLE, Path("/x"))


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    pytest.importorskip("tpm2_pytss")
    base: Path = tmp_path_factory.mktemp("swtpm")
    tpm = Swtpm(base / "state", base / "swtpm.log")
    yield tpm
    tpm.stop()


def test_swtpm_quote_verifies(swtpm: Swtpm) -> None:
    attester = TpmAttester(TpmSettings(swtpm.tcti))
    report_data = hashlib.sha384(b"runtime data").digest()
    evidence = attester.get_evidence(report_data)
    assert set(evidence) == {"ak_public", "tpm_quote"} and len(evidence["tpm_quote"]["pcrs"]) == 24
    report = evaluate_registered(evidence, now=NOW, report_data=report_data)
    assert report, report.error
    assert report.claims is not None and report.claims["report_data"] == report_data[:32].hex()
    wrong = evaluate_registered(evidence, now=NOW, report_data=b"\x01" * 48)
    assert wrong.steps[-1].name == "report data binding" and wrong.steps[-1].outcome == "fail"
    assert attester.get_evidence(b"")["ak_public"] == evidence["ak_public"]  # the same AK every time


def test_swtpm_init_data_through_pcr8(swtpm: Swtpm, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"init data toml").digest()
    log = tmp_path / "eventlog"
    attester = TpmAttester(TpmSettings(swtpm.tcti, event_log=log))
    before = attester.get_evidence(b"")["tpm_quote"]["pcrs"][8]
    if before != "00" * 32:
        pytest.skip("PCR 8 already extended in this swtpm")
    attester.bind_init_data(digest)
    evidence = attester.get_evidence(b"")
    report = evaluate_registered(evidence, now=NOW, init_data_hash=digest)
    assert report, report.error
    assert next(s for s in report.steps if s.name == "init data binding").outcome == "pass"


def test_swtpm_event_log_replays(tmp_path: Path) -> None:
    pytest.importorskip("tpm2_pytss")
    from tests.tpm.test_verify import _event_log

    tpm = Swtpm(tmp_path / "state", tmp_path / "swtpm.log")  # a fresh TPM: PCR 16 at zero
    try:
        digests = [hashlib.sha256(b"first").digest(), hashlib.sha256(b"second").digest()]
        log = tmp_path / "binary_bios_measurements"
        log.write_bytes(_event_log(16, digests))
        attester = TpmAttester(TpmSettings(tpm.tcti, event_log=log))
        for digest in digests:
            attester.extend_runtime_measurement(digest, 16)
        evidence = attester.get_evidence(b"nonce")
        assert "event_log" in evidence
        from attestation_service.core.verifiers.tpm import replay_tpm_event_log

        report = evaluate_registered(evidence, now=NOW, replayer=replay_tpm_event_log)
        assert report, report.error
        assert [s.outcome for s in report.steps if s.number == 6] == ["pass"]
        assert report.claims is not None and len(report.claims["uefi_event_logs"]) == 2
        attester.extend_pcr(16, digests[0])  # one more extend than the log has
        stale = evaluate_registered(attester.get_evidence(b""), now=NOW, replayer=replay_tpm_event_log)
        assert stale.steps[-1].name == "event log replay" and stale.steps[-1].outcome == "fail"
    finally:
        tpm.stop()
