"""`trustee snp-measure`: sev-snp-measure's digest of a synthetic OVMF, registered in a real AS's RVPS API."""

from __future__ import annotations

import json
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sevsnpmeasure import guest, vcpu_types
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType

from tests.procs import Proc, free_port, script
from trustee_common.pki import issue_leaf, make_ca, pem_cert, pem_private_key
from trustee_pb import reference_pb2, reference_pb2_grpc

FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"


def synthetic_ovmf(path: Path, size: int = 64 * 1024, reset_eip: int = 0xFFFFF000) -> Path:
    """The smallest firmware image sev-snp-measure accepts: an OVMF footer table with the SEV-ES reset block."""
    reset = struct.pack("<I", reset_eip) + struct.pack("<H", 4 + 18) + uuid.UUID(RESET_BLOCK_GUID).bytes_le
    footer = struct.pack("<H", len(reset) + 18) + uuid.UUID(FOOTER_GUID).bytes_le
    body = bytes(range(256)) * ((size - 32 - len(reset) - len(footer)) // 256)
    path.write_bytes(body.ljust(size - 32 - len(reset) - len(footer), b"\xff") + reset + footer + bytes(32))
    return path


def snp_measure(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("trustee"), "snp-measure", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def as_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("snp-measure-as")
    config = directory / "as.toml"
    config.write_text(f'[storage_backend]\n[storage_backend.backends.sqlite]\npath = "{directory / "as.sqlite3"}"\n')
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], directory / "as.log", port=port)
    try:
        yield port
    finally:
        assert proc.stop() == 0


def test_digest_matches_the_library(tmp_path: Path) -> None:
    ovmf = synthetic_ovmf(tmp_path / "OVMF.fd")
    result = snp_measure("--ovmf", str(ovmf), "--vcpus", "2", "--vcpu-type", "EPYC-Milan")
    assert result.returncode == 0, result.stderr
    expected = guest.calc_launch_digest(SevMode.SEV_SNP, 2, vcpu_types.CPU_SIGS["EPYC-Milan"], str(ovmf), None, None, None, 0x1,
                                        "", VMMType.QEMU)
    assert result.stdout.strip() == expected.hex()
    assert len(expected) == 48
    by_sig = snp_measure("--ovmf", str(ovmf), "--vcpus", "2", "--vcpu-family", "25", "--vcpu-model", "1", "--vcpu-stepping", "1")
    assert by_sig.stdout == result.stdout
    other = snp_measure("--ovmf", str(ovmf), "--vcpus", "4", "--vcpu-type", "EPYC-Milan")
    assert other.stdout != result.stdout


async def test_register_adds_to_the_reference_value(tmp_path: Path, as_port: int) -> None:
    ovmf = synthetic_ovmf(tmp_path / "OVMF.fd")
    address = f"127.0.0.1:{as_port}"
    first = snp_measure("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC-Genoa", "--register-rvps", address, "--json")
    assert first.returncode == 0, first.stderr
    digest = json.loads(first.stdout)["measurement"]
    second = snp_measure("--ovmf", str(ovmf), "--vcpus", "2", "--vcpu-type", "EPYC-Genoa", "--register-rvps", address, "--json")
    assert second.returncode == 0, second.stderr
    output = json.loads(second.stdout)
    assert output["registered"] == [digest, output["measurement"]]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        reply = await stub.QueryReferenceValue(reference_pb2.ReferenceValueQueryRequest(reference_value_id="snp_launch_measurement"))
    assert json.loads(reply.reference_value_results) == [digest, output["measurement"]]
    replaced = snp_measure("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC-Genoa", "--register-rvps", address, "--replace",
                           "--json")
    assert json.loads(replaced.stdout)["registered"] == [digest]


def test_errors(tmp_path: Path) -> None:
    assert snp_measure("--ovmf", str(tmp_path / "missing.fd"), "--vcpus", "1", "--vcpu-type", "EPYC").returncode == 1
    ovmf = synthetic_ovmf(tmp_path / "OVMF.fd")
    assert snp_measure("--ovmf", str(ovmf), "--vcpus", "1").returncode == 2  # no vCPU type
    assert snp_measure("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "Nope").returncode == 2
    assert snp_measure("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC", "--initrd", str(ovmf)).returncode == 2
    unreachable = snp_measure("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC", "--register-rvps", "127.0.0.1:9")
    assert unreachable.returncode == 1
    assert "FAIL:" in unreachable.stderr


def test_register_over_mutual_tls(tmp_path: Path) -> None:
    """`--register-rvps https://...` with `--rvps-ca` and a client certificate reaches a mutual-TLS AS; without it, FAIL."""
    ca_key, ca = make_ca("snp-measure test CA")
    files = {"ca.pem": pem_cert(ca)}
    for name, names in (("server", {"ip_addresses": ("127.0.0.1",)}), ("client", {})):
        key, cert = issue_leaf(ca_key, ca, name, **names)
        files[f"{name}.pem"], files[f"{name}.key"] = pem_cert(cert), pem_private_key(key)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    config = tmp_path / "as.toml"
    config.write_text(f'[storage_backend]\nstorage_type = "Memory"\n[tls]\ncertificate = "{tmp_path / "server.pem"}"\n'
                      f'private_key = "{tmp_path / "server.key"}"\nclient_ca = "{tmp_path / "ca.pem"}"\n')
    port = free_port()
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}"], tmp_path / "as.log", port=port)
    try:
        ovmf = synthetic_ovmf(tmp_path / "OVMF.fd")
        base = ("--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC-Genoa", "--register-rvps", f"https://127.0.0.1:{port}",
                "--rvps-ca", str(tmp_path / "ca.pem"))
        refused = snp_measure(*base)
        assert refused.returncode == 1 and "FAIL:" in refused.stderr
        done = snp_measure(*base, "--rvps-cert", str(tmp_path / "client.pem"), "--rvps-key", str(tmp_path / "client.key"), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["registered"] == [json.loads(done.stdout)["measurement"]]
        assert snp_measure(*base[:-2], "--rvps-cert", str(tmp_path / "client.pem")).returncode == 2  # without --rvps-key
    finally:
        assert proc.stop() == 0
