"""The real GCP TDX event log: replay equals the quote's RTMRs; names, strings and claims."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from attestation_service.core.eventlog import EventLogParseError, parse_ccel_table, parse_event_log


def test_replay_reproduces_rtmr0_to_3_of_the_quote(gcp_log: bytes, gcp_rtmrs: list[bytes]) -> None:
    log = parse_event_log(gcp_log)
    assert log.crypto_agile
    assert log.algorithms == {0x000C: 48}
    assert log.replay() == gcp_rtmrs
    log.check_rtmrs(gcp_rtmrs)


def test_a_changed_rtmr_is_reported(gcp_log: bytes, gcp_rtmrs: list[bytes]) -> None:
    wrong = [*gcp_rtmrs[:2], bytes(48), gcp_rtmrs[3]]
    with pytest.raises(EventLogParseError, match="RTMR2"):
        parse_event_log(gcp_log).check_rtmrs(wrong)


def test_replay_ignores_no_action_events(gcp_log: bytes, gcp_rtmrs: list[bytes]) -> None:
    log = parse_event_log(gcp_log)
    assert log.header.type_name == "EV_NO_ACTION"
    assert all(event.type_name != "EV_NO_ACTION" for event in log.events)


def test_event_type_names_follow_upstream(gcp_log: bytes) -> None:
    names = [event.type_name for event in parse_event_log(gcp_log).events]
    assert len(names) == 43
    assert names[:3] == ["EV_EFI_HANDOFF_TABLES2", "EV_EFI_PLATFORM_FIRMWARE_BLOB2", "EV_EFI_VARIABLE_DRIVER_CONFIG"]
    assert names.count("EV_EFI_BOOT_SERVICES_APPLICATION") == 2
    assert names.count("EV_IPL") == 20
    assert {"EV_SEPARATOR", "EV_PLATFORM_CONFIG_FLAGS", "EV_EFI_VARIABLE_BOOT", "EV_EFI_ACTION", "EV_EFI_GPT_EVENT"} <= set(names)
    assert "EV_EFI_VARIABLE_AUTHORITY" in names


def test_kernel_and_command_line_events(gcp_log: bytes) -> None:
    claims = parse_event_log(gcp_log).to_claims()
    strings = [c["details"].get("string", "") for c in claims if c["type_name"] == "EV_IPL"]
    kernel = [s for s in strings if s.startswith("kernel_cmdline: /syslinux/vmlinuz.A ")]
    assert len(kernel) == 1
    assert "init=/usr/lib/systemd/systemd" in kernel[0]
    assert "/syslinux/vmlinuz.A" in strings
    cmdline = next(c for c in claims if c["details"].get("string", "").startswith("kernel_cmdline: "))
    assert cmdline["index"] == 3  # RTMR2
    event = base64.b64decode(cmdline["event"])
    assert event.startswith(b"kernel_cmdline: ") and event.endswith(b"\x00")


def test_boot_application_device_paths(gcp_log: bytes) -> None:
    apps = [c for c in parse_event_log(gcp_log).to_claims() if c["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION"]
    first, second = (app["details"]["device_paths"] for app in apps)
    assert first[:3] == ["ACPI(PNP0A03,0)", "Pci(0,4)", "Path(3,23,010000000000000000000000)"]
    assert first[3].startswith("HD(12,GPT,") and first[-1] == "File(\\EFI\\BOOT\\BOOTX64.EFI)"
    assert second == ["File(\\EFI\\BOOT\\grub-lakitu.efi)"]


def test_efi_variable_and_string_details(gcp_log: bytes) -> None:
    claims = parse_event_log(gcp_log).to_claims()
    assert claims[0]["details"] == {"string": "TdxTable"}
    assert claims[1]["details"] == {"string": "Fv(48DB5E17-707C-472D-91CD-1613E7EF51B0)"}
    assert claims[2]["details"] == {
        "unicode_name": "SecureBoot",
        "unicode_name_length": 10,
        "variable_data": "AA==",
        "variable_data_length": 1,
        "variable_name": "61dfe48b-ca93-d211-aa0d-00e098032b8c",
    }
    sbat = next(c for c in claims if c["details"].get("unicode_name") == "SbatLevel")
    assert base64.b64decode(sbat["details"]["variable_data"]) == b"sbat,1,2021030218\n"
    assert claims[-1]["details"] == {"string": "Exit Boot Services Returned with Success"}


def test_claims_have_the_upstream_shape(gcp_log: bytes) -> None:
    claims = parse_event_log(gcp_log).to_claims()
    json.dumps(claims)
    for claim in claims:
        assert set(claim) == {"index", "type_name", "digest_matches_event", "digests", "event", "details"}
        assert [d["alg"] for d in claim["digests"]] == ["SHA-384"]
        assert len(bytes.fromhex(claim["digests"][0]["digest"])) == 48
    separator = next(c for c in claims if c["type_name"] == "EV_SEPARATOR")
    assert separator["digest_matches_event"] is True
    assert separator["digests"][0]["digest"] == hashlib.sha384(bytes(4)).hexdigest()
    assert claims[0]["digest_matches_event"] is False


def test_trailing_padding_is_accepted_in_every_form(gcp_log: bytes, gcp_rtmrs: list[bytes]) -> None:
    end = 18101  # the first 0xFF byte after the last event
    assert gcp_log[end : end + 8] == b"\xff" * 8
    for trimmed in (gcp_log[:end], gcp_log[:end] + bytes(8), gcp_log[:end] + b"\xff" * 3, gcp_log[:end] + bytes(5)):
        assert parse_event_log(trimmed).replay() == gcp_rtmrs


def test_ccel_table(gcp_table: bytes) -> None:
    table = parse_ccel_table(gcp_table)
    assert (table.cc_type, table.cc_type_name, table.cc_subtype) == (2, "TDX", 0)
    assert table.laml == 0x40000
    assert table.lasa == 0xBEDBF000
    assert (table.oem_id, table.oem_table_id, table.revision) == ("INTEL", "EDK2", 1)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda t: t[:40], "table"),
        (lambda t: b"XCEL" + t[4:], "signature"),
        (lambda t: t[:4] + b"\x39" + t[5:], "length"),
        (lambda t: t[:36] + b"\x03" + t[37:], "checksum"),
    ],
)
def test_a_bad_ccel_table_is_rejected(gcp_table: bytes, mutate: object, field: str) -> None:
    assert callable(mutate)
    with pytest.raises(EventLogParseError, match=field) as caught:
        parse_ccel_table(mutate(gcp_table))
    assert caught.value.field == field
