"""Hand-built logs: AAEL entries, tagged events, device paths, legacy SHA-1 logs."""

from __future__ import annotations

import hashlib
import struct

import pytest
from attestation_service.core.eventlog import (
    AAEL_TAG_ID,
    EventLogParseError,
    aael_event,
    aael_tagged_data,
    device_path_nodes,
    event_details,
    parse_event_log,
)

from .builders import SHA256, SHA384, agile_log, event2, legacy_event, spec_id_header

# guest-components.md 2.6, test_event_digest
AAEL_TEXT = "domain operation content"
AAEL_SHA256 = "46df8dacf00a07d34a83cdf56d7978697790787cf2ba1432ef7c38f22cd96351"
AAEL_SHA384 = "dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d793f670d02"


def _extend(alg: str, register: bytes, event: bytes) -> bytes:
    return hashlib.new(alg, register + hashlib.new(alg, event).digest()).digest()


def test_aael_digest_vectors() -> None:
    tagged = aael_tagged_data(AAEL_TEXT)
    assert tagged[:8] == b"LEAA" + struct.pack("<I", len(AAEL_TEXT))
    assert hashlib.sha256(tagged).hexdigest() == AAEL_SHA256
    assert hashlib.sha384(tagged).hexdigest() == AAEL_SHA384
    _, digest = aael_event(4, AAEL_TEXT)
    assert digest.hex() == AAEL_SHA384
    _, digest256 = aael_event(4, AAEL_TEXT, SHA256)
    assert digest256.hex() == AAEL_SHA256


def test_aael_event_appended_to_the_real_log_extends_rtmr3(gcp_log: bytes, gcp_rtmrs: list[bytes]) -> None:
    entry, digest = aael_event(4, 'github.com/confidential-containers PullImage {"image":"busybox", "digest":"sha256:00"}')
    trimmed = gcp_log[:18101]
    log = parse_event_log(trimmed + entry + b"\xff" * 8)
    claim = log.to_claims()[-1]
    assert claim["index"] == 4 and claim["type_name"] == "EV_EVENT_TAG"
    assert claim["digest_matches_event"] is True
    assert claim["digests"] == [{"alg": "SHA-384", "digest": digest.hex()}]
    assert claim["details"]["unicode_name"] == "AAEL"
    assert claim["details"]["data"] == {
        "domain": "github.com/confidential-containers",
        "operation": "PullImage",
        "content": {"image": "busybox", "digest": "sha256:00"},
    }
    assert log.replay()[:3] == gcp_rtmrs[:3]
    assert log.replay()[3] == hashlib.sha384(gcp_rtmrs[3] + digest).digest()


def test_aael_content_that_is_not_json_stays_text() -> None:
    details = event_details(0x6, aael_tagged_data("coco.com some-operation some content with spaces"))
    assert details["data"] == {"domain": "coco.com", "operation": "some-operation", "content": "some content with spaces"}
    assert details["string"] == "coco.com some-operation some content with spaces"
    assert event_details(0x6, aael_tagged_data("coco.com NaN NaN"))["data"]["content"] == "NaN"
    assert "data" not in event_details(0x6, aael_tagged_data("only-one space"))


def test_loaded_image_tag_gives_the_load_options_string() -> None:
    text = b"LOADED_IMAGE::LoadOptions\x00"
    details = event_details(0x6, struct.pack("<II", 0x8F3B22ED, len(text)) + text)
    assert details == {"string": "LOADED_IMAGE::LoadOptions"}
    assert AAEL_TAG_ID == 0x4141454C


def _guid_le(text: str) -> bytes:
    import uuid

    return uuid.UUID(text).bytes_le


def test_direct_kernel_boot_device_path_has_a_file_kernel_node() -> None:
    vendor = struct.pack("<BBH", 4, 3, 20) + _guid_le("1428F772-B64A-441E-B8C3-9EBDD7F893C7")
    name = "kernel\x00".encode("utf-16-le")
    file_node = struct.pack("<BBH", 4, 4, 4 + len(name)) + name
    path = vendor + file_node + bytes([0x7F, 0xFF, 4, 0])
    data = struct.pack("<QQQQ", 0x7CB30000, 0xA5A200, 0, len(path)) + path
    details = event_details(0x80000003, data)
    assert details == {"device_paths": ["VenMedia(1428F772-B64A-441E-B8C3-9EBDD7F893C7,)", "File(kernel)"]}
    assert device_path_nodes(bytes([1, 1, 6, 0, 1, 3]) + bytes([0x7F, 0xFF, 4, 0])) == ["Pci(1,3)"]
    assert event_details(0x80000003, struct.pack("<QQQQ", 0, 0, 0, 0)) == {}


def test_google_utf16_ipl_strings() -> None:
    assert event_details(0xD, bytes.fromhex("2e006c0069006e00750078000000")) == {"string": "linux"}
    assert event_details(0xD, b"MokList\x00") == {"string": "MokList"}
    assert event_details(0xD, b"\xff\xfe\x00") == {"string": "fffe00"}
    assert event_details(0xD, b"\x2e\x00\x00") == {}


def test_undecodable_details_are_empty_not_errors() -> None:
    assert event_details(0x80000007, b"\xff") == {}
    assert event_details(0x80000001, bytes(20)) == {}
    assert event_details(0x8000000B, b"\x30abc") == {}
    assert event_details(0x12345, b"anything") == {}


def test_a_sha1_only_legacy_log_parses_but_cannot_replay_sha384() -> None:
    data = legacy_event(0, 8, b"1.0\x00") + legacy_event(4, 4, bytes(4)) + legacy_event(4, 0x80000007, b"Calling EFI Application")
    log = parse_event_log(data)
    assert not log.crypto_agile
    assert [e.type_name for e in log.events] == ["EV_S_CRTM_VERSION", "EV_SEPARATOR", "EV_EFI_ACTION"]
    assert log.to_claims()[2]["digests"][0]["alg"] == "SHA-1"
    assert log.to_claims()[2]["digest_matches_event"] is True
    rtmr3 = _extend("sha1", _extend("sha1", bytes(20), bytes(4)), b"Calling EFI Application")
    assert log.replay(registers=4, alg_id=0x0004)[3] == rtmr3
    with pytest.raises(EventLogParseError, match="no SHA-384 digest"):
        log.replay()


def test_two_bank_log_and_unknown_event_type() -> None:
    header = spec_id_header([(SHA256, 32), (SHA384, 48)], vendor=b"v")
    data = b"abc"
    both = event2(2, 0x80000007, data, [(SHA256, hashlib.sha256(data).digest()), (SHA384, hashlib.sha384(data).digest())])
    only384 = event2(2, 0x7777, b"x")
    log = parse_event_log(header + both + only384)
    assert [d.alg for d in log.events[0].digests] == ["SHA-256", "SHA-384"]
    assert log.events[1].type_name == "EV_UNKNOWN_0x00007777"
    assert log.replay()[1] == _extend("sha384", _extend("sha384", bytes(48), data), b"x")


def test_empty_log_after_the_header() -> None:
    log = parse_event_log(agile_log())
    assert log.events == ()
    assert log.replay() == [bytes(48)] * 4
