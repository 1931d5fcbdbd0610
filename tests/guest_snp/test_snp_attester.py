"""The snp attester: wire conversion (round trips with the verifier), certificate table, configfs-tsm, ioctl marshalling, detection."""

from __future__ import annotations

import ctypes
import datetime
import errno
import fcntl
import json
import logging
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from attestation_service.core.verifiers.snp import SnpVerifier, parse_report, report_from_json, report_to_json
from attestation_service.core.verifiers.snp.certs import load_certificates
from cryptography.hazmat.primitives.serialization import Encoding

from guest.attesters import SampleAttester, SnpAttester, SnpPaths, TdxAttester, TpmAttester, detect_attesters
from guest.attesters.snp import (
    EXT_REPORT_REQ_SIZE,
    GUEST_REQUEST_SIZE,
    REPORT_REQ_SIZE,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    build_evidence,
    detect_snp,
    device_report,
    pack_ext_report_req,
    pack_guest_request,
    pack_report_req,
    parse_cert_table,
    report_to_wire,
    unpack_ext_report_certs_len,
    unpack_guest_request_errors,
    unpack_report_resp,
)
from trustee_common.errors import AttestationError, MalformedRequestError

from .conftest import SNP_CORPUS, FakeSnpConfigfs, corpus_file

VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
CRL_GUID = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"
VLEK_GUID = "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
MILAN_TIME = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
MIT_KEYS = ("launch_mit_vector", "current_mit_vector")


def cert_table(entries: list[tuple[str, bytes]], guid_le: bool = False) -> bytes:
    """A GHCB certificate table: 24-byte entries, an all-zero terminator, then the data."""
    header = bytearray()
    data = bytearray()
    offset = (len(entries) + 1) * 24
    for guid, blob in entries:
        value = uuid.UUID(guid)
        header += (value.bytes_le if guid_le else value.bytes) + struct.pack("<II", offset + len(data), len(blob))
        data += blob
    return bytes(header + bytes(24) + data + bytes(100))  # trailing slack as in a page-sized buffer


def milan_chain() -> tuple[bytes, bytes, bytes]:
    """(VCEK, ASK, ARK) DER of the virtee-milan case."""
    ask, ark = load_certificates(corpus_file("virtee-milan/cert_chain.pem"), "cert_chain.pem")
    return corpus_file("virtee-milan/vcek.der"), ask.public_bytes(Encoding.DER), ark.public_bytes(Encoding.DER)


def genoa_evidence() -> tuple[str, dict[str, Any]]:
    text = (SNP_CORPUS / "trustee-genoa-e2e" / "evidence.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return text, loaded


def paths(root: Path, tmp_path: Path) -> SnpPaths:
    return SnpPaths(tsm_report=root, device=tmp_path / "sev-guest", platform=tmp_path / "platform-sev-guest")


# --- raw report <-> upstream's object -----------------------------------------------------


def test_milan_report_round_trips_byte_exact(milan_report: bytes) -> None:
    wire = report_to_wire(milan_report)
    assert report_from_json(wire) == milan_report
    assert wire == report_to_json(parse_report(milan_report))  # the verifier's own inverse agrees
    assert wire["version"] == 2 and wire["cpuid_fam_id"] is None and wire["launch_mit_vector"] is None
    assert json.loads(json.dumps(wire)) == wire


def test_genoa_wire_object_round_trips_to_the_same_json() -> None:
    text, evidence = genoa_evidence()
    raw = report_from_json(evidence["attestation_report"])
    wire = report_to_wire(raw)
    # Upstream's sev crate of the corpus predates the v5 mit-vector fields; ours emits them, null below v5.
    assert {k: wire[k] for k in MIT_KEYS} == {"launch_mit_vector": None, "current_mit_vector": None}
    trimmed = {k: v for k, v in wire.items() if k not in MIT_KEYS}
    assert list(trimmed) == list(evidence["attestation_report"])
    assert trimmed == evidence["attestation_report"]
    rebuilt = {"attestation_report": trimmed, "cert_chain": evidence["cert_chain"]}
    assert json.dumps(rebuilt, separators=(",", ":")) == text.strip()
    assert report_from_json(wire) == raw


def test_key_order_is_virtee_sev_declaration_order(milan_report: bytes) -> None:
    _, evidence = genoa_evidence()
    keys = [k for k in report_to_wire(milan_report) if k not in MIT_KEYS]
    assert keys == list(evidence["attestation_report"])
    assert list(report_to_wire(milan_report))[-3:] == [*MIT_KEYS, "signature"]


def test_v5_turin_fields_round_trip(milan_report: bytes) -> None:
    raw = bytearray(milan_report)
    raw[0:4] = (5).to_bytes(4, "little")
    raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x01])  # Turin CPUID
    for at in (0x38, 0x180, 0x1E0, 0x1F0):  # Turin TCB layout: fmc, bl, tee, snp, reserved[3], ucode
        raw[at : at + 8] = bytes([1, 2, 3, 4, 0, 0, 0, 9])
    raw[0x1F8:0x200] = (0x1234).to_bytes(8, "little")
    raw[0x200:0x208] = (0x5678).to_bytes(8, "little")
    wire = report_to_wire(bytes(raw))
    assert wire["reported_tcb"] == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 9}
    assert (wire["launch_mit_vector"], wire["current_mit_vector"]) == (0x1234, 0x5678)
    assert (wire["cpuid_fam_id"], wire["cpuid_mod_id"], wire["cpuid_step"]) == (0x1A, 0x02, 0x01)
    assert report_from_json(wire) == bytes(raw)
    assert wire == report_to_json(parse_report(bytes(raw)))


def test_wrong_report_size_is_refused() -> None:
    with pytest.raises(AttestationError, match="1000 bytes, an SNP report is exactly 1184"):
        report_to_wire(bytes(1000))


# --- certificate table ----------------------------------------------------------------------


def test_certificate_table_maps_guids_to_upstream_names() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    table = cert_table([(VCEK_GUID, b"v"), (VLEK_GUID, b"l"), (ASK_GUID, b"as"), (ARK_GUID, b"ark"), (CRL_GUID, b"c"), (other, b"o")])
    assert parse_cert_table(table) == [
        {"cert_type": "VCEK", "data": list(b"v")},
        {"cert_type": "VLEK", "data": list(b"l")},
        {"cert_type": "ASK", "data": list(b"as")},
        {"cert_type": "ARK", "data": list(b"ark")},
        {"cert_type": "CRL", "data": list(b"c")},
        {"cert_type": {"OTHER": other}, "data": list(b"o")},
    ]


def test_certificate_table_accepts_mixed_endian_guids() -> None:
    table = cert_table([(VCEK_GUID, b"v"), (ARK_GUID, b"a")], guid_le=True)
    assert [e["cert_type"] for e in parse_cert_table(table) or []] == ["VCEK", "ARK"]


def test_empty_certificate_tables_are_null() -> None:
    assert parse_cert_table(b"") is None
    assert parse_cert_table(bytes(4096)) is None
    assert build_evidence(corpus_file("virtee-milan/report.bin"), None)["cert_chain"] is None
    assert build_evidence(corpus_file("virtee-milan/report.bin"), b"")["cert_chain"] is None


def test_malformed_certificate_tables_are_errors() -> None:
    table = bytearray(cert_table([(VCEK_GUID, b"v" * 10)]))
    struct.pack_into("<I", table, 20, 10_000)
    with pytest.raises(AttestationError, match="outside the"):
        parse_cert_table(bytes(table))
    with pytest.raises(AttestationError, match="no all-zero terminator"):
        parse_cert_table(uuid.UUID(VCEK_GUID).bytes + struct.pack("<II", 24, 8) + b"\x01" * 8)


# --- configfs-tsm ---------------------------------------------------------------------------


def test_evidence_through_configfs_verifies_with_the_snp_verifier(configfs: FakeSnpConfigfs, tmp_path: Path, milan_report: bytes) -> None:
    vcek, ask, ark = milan_chain()
    configfs.auxblob = cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)])
    evidence = SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"\x01" * 32)
    assert list(evidence) == ["attestation_report", "cert_chain"]
    assert [e["cert_type"] for e in evidence["cert_chain"]] == ["VCEK", "ASK", "ARK"]
    assert bytes(evidence["cert_chain"][0]["data"]) == vcek
    assert report_from_json(evidence["attestation_report"]) == milan_report
    assert configfs.inblobs == [b"\x01" * 32 + bytes(32)]
    assert configfs.privlevels == ["0\n"]
    assert configfs.removed == configfs.created and len(configfs.created) == 1
    wire = json.loads(json.dumps(evidence))  # what travels
    [(claims, kind)] = SnpVerifier().evaluate(wire, milan_report[0x50:0x90], None, MILAN_TIME)
    assert kind == "cpu" and claims


def test_evidence_without_auxblob_verifies_with_the_vcek_supplied(configfs: FakeSnpConfigfs, tmp_path: Path, milan_report: bytes) -> None:
    configfs.has_privlevel = False
    evidence = SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"")
    assert evidence["cert_chain"] is None
    assert configfs.privlevels == [None] and configfs.inblobs == [bytes(64)]
    vcek = corpus_file("virtee-milan/vcek.der")
    [(claims, _)] = SnpVerifier(lambda key: vcek, verification_time=MILAN_TIME).evaluate(
        json.loads(json.dumps(evidence)), milan_report[0x50:0x90], None, datetime.datetime.now(datetime.UTC)
    )
    assert claims


def test_tampered_report_does_not_verify(configfs: FakeSnpConfigfs, tmp_path: Path, milan_report: bytes) -> None:
    vcek, ask, ark = milan_chain()
    configfs.outblob = milan_report[:0x90] + bytes([milan_report[0x90] ^ 1]) + milan_report[0x91:]
    configfs.auxblob = cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)])
    evidence = SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    with pytest.raises(Exception, match="signature"):
        SnpVerifier().evaluate(evidence, milan_report[0x50:0x90], None, MILAN_TIME)


def test_report_data_longer_than_64_bytes_is_refused(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    with pytest.raises(MalformedRequestError, match="65 bytes, at most 64"):
        SnpAttester(paths(configfs.root, tmp_path)).get_evidence(bytes(65))
    assert configfs.created == []


def test_another_provider_is_refused_and_the_entry_removed(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    configfs.provider = "tdx_guest\n"
    with pytest.raises(AttestationError, match="provider is 'tdx_guest', not 'sev_guest'"):
        SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    assert configfs.inblobs == []
    assert configfs.removed == configfs.created and len(configfs.created) == 1


def test_a_second_writer_is_detected_by_generation(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    configfs.generation_after_write = 2
    with pytest.raises(AttestationError, match="another writer"):
        SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    assert configfs.removed == configfs.created


def test_an_outblob_of_the_wrong_size_is_refused(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    configfs.outblob = b"\x00" * 100
    with pytest.raises(AttestationError, match="outblob is 100 bytes"):
        SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    assert configfs.removed == configfs.created


def test_without_configfs_the_device_is_used(tmp_path: Path) -> None:
    attester = SnpAttester(paths(tmp_path / "no-configfs", tmp_path))
    with pytest.raises(AttestationError, match=r"/dev/sev-guest: cannot open .*sev-guest"):
        attester.get_evidence(b"x")


# --- /dev/sev-guest marshalling (uapi sev-guest.h) -------------------------------------------


def test_ioctl_numbers_are_the_uapi_ones() -> None:
    assert SNP_GET_REPORT == 0xC0205300
    assert SNP_GET_EXT_REPORT == 0xC0205302


def test_report_request_layout() -> None:
    request = pack_report_req(bytes(range(64)), vmpl=0)
    assert len(request) == REPORT_REQ_SIZE == 96
    assert request[:64] == bytes(range(64)) and request[64:68] == bytes(4) and request[68:] == bytes(28)
    assert pack_report_req(bytes(64), vmpl=2)[64:68] == b"\x02\x00\x00\x00"
    with pytest.raises(ValueError, match="exactly 64"):
        pack_report_req(bytes(63))


def test_extended_report_request_layout() -> None:
    request = pack_ext_report_req(b"\xaa" * 64, certs_address=0x7F00_1234_5000, certs_len=0x4000)
    assert len(request) == EXT_REPORT_REQ_SIZE == 112
    assert request[:96] == pack_report_req(b"\xaa" * 64)
    assert struct.unpack_from("<QI", request, 96) == (0x7F00_1234_5000, 0x4000)
    assert request[108:] == bytes(4)
    written_back = request[:104] + struct.pack("<I", 0x9000) + request[108:]
    assert unpack_ext_report_certs_len(written_back) == 0x9000


def test_guest_request_layout_and_errors() -> None:
    guest = pack_guest_request(0x1000, 0x2000)
    assert len(guest) == GUEST_REQUEST_SIZE == 32
    assert guest[0] == 1 and guest[1:8] == bytes(7)
    assert struct.unpack_from("<QQQ", guest, 8) == (0x1000, 0x2000, 0)
    struct.pack_into("<II", guest, 24, 0x16, 1)  # what the kernel writes into exitinfo2
    assert unpack_guest_request_errors(guest) == (0x16, 1)


def test_report_response_parsing(milan_report: bytes) -> None:
    response = struct.pack("<II", 0, 1184) + bytes(24) + milan_report
    response += bytes(4000 - len(response))
    assert unpack_report_resp(response) == milan_report
    with pytest.raises(AttestationError, match="firmware status 0x16"):
        unpack_report_resp(struct.pack("<II", 0x16, 0) + bytes(3992))
    with pytest.raises(AttestationError, match="report_size 100"):
        unpack_report_resp(struct.pack("<II", 0, 100) + bytes(3992))


def test_device_report_on_a_non_device_is_an_attestation_error(tmp_path: Path) -> None:
    (tmp_path / "sev-guest").write_bytes(b"")
    with pytest.raises(AttestationError, match=r"SNP_GET_EXT_REPORT|SNP_GET_REPORT"):
        device_report(tmp_path / "sev-guest", bytes(64))


# --- detection -------------------------------------------------------------------------------


def _env(tmp_path: Path, tsm: Path, **extra: str) -> dict[str, str]:
    return {
        "TSM_REPORT_PATH": str(tsm),
        "TDX_GUEST_DEVICE": str(tmp_path / "tdx_guest"),
        "CCEL_PATH": str(tmp_path / "CCEL"),
        "SEV_GUEST_DEVICE": str(tmp_path / "sev-guest"),
        "SEV_GUEST_PLATFORM": str(tmp_path / "platform-sev-guest"),
        **extra,
    }


def test_snp_is_detected_through_the_platform_device(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "platform-sev-guest").mkdir()
    with caplog.at_level(logging.INFO, logger="guest.attesters.base"):
        primary, _ = detect_attesters(_env(tmp_path, tmp_path / "no-configfs"))
    assert isinstance(primary, SnpAttester) and primary.tee == "snp"
    assert primary.paths.device == tmp_path / "sev-guest"
    assert "using the snp attester" in caplog.text and "platform-sev-guest exists" in caplog.text


def test_snp_is_detected_through_configfs_tsm(configfs: FakeSnpConfigfs, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="guest.attesters.base"):
        primary, _ = detect_attesters(_env(tmp_path, configfs.root))
    assert isinstance(primary, SnpAttester)
    assert "configfs-tsm provider sev_guest" in caplog.text and "using the snp attester" in caplog.text
    assert configfs.removed == configfs.created  # the probe entries (tdx, then snp) are removed


def test_tdx_comes_before_snp(tmp_path: Path) -> None:
    (tmp_path / "platform-sev-guest").mkdir()
    (tmp_path / "tdx_guest").touch()
    primary, _ = detect_attesters(_env(tmp_path, tmp_path / "no-configfs"))
    assert isinstance(primary, TdxAttester)


def test_snp_comes_before_tpm_and_tpm_before_sample(tmp_path: Path) -> None:
    (tmp_path / "platform-sev-guest").mkdir()
    env = _env(tmp_path, tmp_path / "no-configfs", AA_TPM_TCTI="swtpm:host=127.0.0.1,port=1")
    assert isinstance(detect_attesters(env)[0], SnpAttester)
    (tmp_path / "platform-sev-guest").rmdir()
    assert isinstance(detect_attesters(env)[0], TpmAttester)


def test_no_tee_is_sample(tmp_path: Path) -> None:
    primary, _ = detect_attesters(_env(tmp_path, tmp_path / "none"))
    assert isinstance(primary, SampleAttester)
    assert detect_snp(paths(tmp_path / "none", tmp_path)) is None


# --- more corpus cases through configfs -------------------------------------------------------


def test_genoa_report_through_configfs_verifies(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    _, corpus = genoa_evidence()
    raw = report_from_json(corpus["attestation_report"])
    [vcek] = corpus["cert_chain"]
    configfs.outblob = raw
    configfs.auxblob = cert_table([(VCEK_GUID, bytes(vcek["data"]))])
    evidence = SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    assert evidence["cert_chain"] == corpus["cert_chain"]
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    [(claims, _)] = SnpVerifier().evaluate(json.loads(json.dumps(evidence)), raw[0x50:0x90], None, now)
    assert claims


def test_vlek_report_through_configfs_verifies(configfs: FakeSnpConfigfs, tmp_path: Path) -> None:
    raw = corpus_file("trustee-vlek/report.bin")
    configfs.outblob = raw
    configfs.auxblob = cert_table([(VLEK_GUID, corpus_file("trustee-vlek/vlek.der"))])
    evidence = SnpAttester(paths(configfs.root, tmp_path)).get_evidence(b"x")
    assert [e["cert_type"] for e in evidence["cert_chain"]] == ["VLEK"]
    now = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    [(claims, _)] = SnpVerifier().evaluate(json.loads(json.dumps(evidence)), raw[0x50:0x90], None, now)
    assert claims


# --- the ioctl path against a simulated driver (fcntl.ioctl patched) ---------------------------


class FakeSevGuestDriver:
    """Answers the sev-guest ioctls in process memory, as the kernel would through copy_to_user."""

    def __init__(self, report: bytes, certs: bytes | None, ext_supported: bool = True) -> None:
        self.report = report
        self.certs = certs
        self.ext_supported = ext_supported
        self.calls: list[tuple[int, int, bytes]] = []  # (request number, certs_len or 0, user_data)

    def ioctl(self, fd: int, request: int, arg: bytearray, *rest: Any) -> int:
        msg_version, req_address, resp_address = struct.unpack_from("<B7xQQ", arg)
        assert msg_version == 1
        size = EXT_REPORT_REQ_SIZE if request == SNP_GET_EXT_REPORT else REPORT_REQ_SIZE
        req = ctypes.string_at(req_address, size)
        certs_len = unpack_ext_report_certs_len(req) if request == SNP_GET_EXT_REPORT else 0
        self.calls.append((request, certs_len, req[:64]))
        if request == SNP_GET_EXT_REPORT:
            if not self.ext_supported:
                raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
            certs = self.certs or b""
            if len(certs) > certs_len:
                needed = -(-len(certs) // 4096) * 4096
                ctypes.memmove(req_address + 104, struct.pack("<I", needed), 4)
                struct.pack_into("<II", arg, 24, 0, 1)  # vmm_error INVALID_LEN
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            (certs_address,) = struct.unpack_from("<Q", req, 96)
            ctypes.memmove(certs_address, certs, len(certs))
        response = struct.pack("<II", 0, len(self.report)) + bytes(24) + self.report
        ctypes.memmove(resp_address, response, len(response))
        return 0


def test_device_extended_report_with_a_retry_for_a_larger_buffer(
    tmp_path: Path, milan_report: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    vcek, ask, ark = milan_chain()
    table = cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)]) + bytes(16384)  # needs more than 4 pages
    driver = FakeSevGuestDriver(milan_report, table)
    monkeypatch.setattr(fcntl, "ioctl", driver.ioctl)
    (tmp_path / "sev-guest").write_bytes(b"")
    evidence = SnpAttester(paths(tmp_path / "no-configfs", tmp_path)).get_evidence(b"\x02" * 64)
    assert [(c[0], c[1]) for c in driver.calls] == [(SNP_GET_EXT_REPORT, 16384), (SNP_GET_EXT_REPORT, -(-len(table) // 4096) * 4096)]
    assert driver.calls[0][2] == b"\x02" * 64
    assert [e["cert_type"] for e in evidence["cert_chain"]] == ["VCEK", "ASK", "ARK"]
    [(claims, _)] = SnpVerifier().evaluate(json.loads(json.dumps(evidence)), milan_report[0x50:0x90], None, MILAN_TIME)
    assert claims


def test_device_falls_back_to_the_plain_report(tmp_path: Path, milan_report: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeSevGuestDriver(milan_report, None, ext_supported=False)
    monkeypatch.setattr(fcntl, "ioctl", driver.ioctl)
    (tmp_path / "sev-guest").write_bytes(b"")
    report, table = device_report(tmp_path / "sev-guest", bytes(64))
    assert report == milan_report and table is None
    assert [c[0] for c in driver.calls] == [SNP_GET_EXT_REPORT, SNP_GET_REPORT]
