"""Every upstream Attestation Service and RVPS config, with only paths and ports changed, parses here; a few start.

`upstream_configs/index.json` maps each fixture (a structural copy written
here: upstream's keys and value shapes, paths into the test's temporary
directory) to the upstream file or doc block it mirrors and the expected
outcome. The parse test covers all of them; the start tests run the real
`rvps` and `grpc-as` on a representative few and make real calls over
loopback (gRPC health, a reference value registered at the RVPS and read back
through the AS that points at it).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from attestation_service.collateral import build_tdx_verifier
from attestation_service.config import AsConfig, parse_sections
from attestation_service.tpm_config import build_tpm_verifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rvps.config import RvpsConfig
from tests.procs import Proc, free_port, script
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.pki import ensure_token_signing_material, issue_leaf, make_ca, pem_cert, pem_private_key
from trustee_common.storage import StorageConfig
from trustee_pb import attestation_pb2, attestation_pb2_grpc, reference_pb2_grpc
from trustee_pb import reference_pb2 as pb

HERE = Path(__file__).parent / "upstream_configs"
INDEX: list[dict[str, str]] = json.loads((HERE / "index.json").read_text())["configs"]
RVPS_PLACEHOLDER_PORT = 50003


def _param(entry: dict[str, str]) -> Any:
    return pytest.param(entry, id=entry["file"])


def materialise(name: str, directory: Path, rvps_port: int = RVPS_PLACEHOLDER_PORT) -> Path:
    """The fixture `name` with its placeholders filled in, written into `directory`, with the files it names."""
    text = (HERE / name).read_text()
    text = text.replace("@TMP@", str(directory)).replace("@RVPS_HOSTPORT@", f"127.0.0.1:{rvps_port}")
    text = text.replace("@RVPS@", f"http://127.0.0.1:{rvps_port}")
    _support_files(directory)
    target = directory / Path(name).name
    target.write_text(text)
    return target


def _support_files(directory: Path) -> None:
    """Signing keys where the fixtures expect them, one trusted AK, an (empty) offline VCEK store."""
    keys = ensure_token_signing_material(directory / "pki")
    for key, chain in (("coco-as/signer.key", "coco-as/signer.pub"), ("etc/key", "etc/cert.pem"),
                       ("kbs/user-keys/token.key", "kbs/user-keys/token-cert-chain.pem")):
        (directory / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(keys.token_key, directory / key)
        shutil.copyfile(keys.token_cert_chain, directory / chain)
    ak_dir = directory / "tpm" / "trusted_ak_keys"
    ak_dir.mkdir(parents=True, exist_ok=True)
    ak = ec.generate_private_key(ec.SECP256R1()).public_key()
    (ak_dir / "ak.pem").write_bytes(ak.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (directory / "attestation-service" / "kds-store").mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("entry", [_param(e) for e in INDEX])
def test_every_upstream_config_parses(entry: dict[str, str], tmp_path: Path) -> None:
    path = materialise(entry["file"], tmp_path)
    parse = RvpsConfig.parse if entry["file"].startswith("rvps/") else AsConfig.parse
    if entry["outcome"] == "upstream_refuses":
        try:
            parse(json.loads(path.read_text()), tmp_path)
        except ConfigError as exc:
            assert "\n" not in exc.detail
        return
    parse(json.loads(path.read_text()), tmp_path)


def test_index_covers_every_fixture() -> None:
    files = {str(p.relative_to(HERE)) for p in HERE.glob("*/*.json")}
    assert files == {e["file"] for e in INDEX}


def test_obsolete_keys_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    AsConfig.parse(json.loads(materialise("as/cca-as-config.json", tmp_path).read_text()), tmp_path)
    lines = [r.getMessage() for r in caplog.records if "accepted with differences from upstream" in r.getMessage()]
    assert len(lines) == 1
    for key in ("work_dir", "policy_engine", "attestation_token_broker.policy_dir"):
        assert key in lines[0]
    caplog.clear()
    RvpsConfig.parse(json.loads(materialise("rvps/docker-compose-rvps.json", tmp_path).read_text()), tmp_path)
    lines = [r.getMessage() for r in caplog.records if "accepted with differences from upstream" in r.getMessage()]
    assert len(lines) == 1 and "storage.type" in lines[0] and "storage.file_path" in lines[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"surprise": 1}, "unknown key"),
        ({"attestation_token_broker": "Simple"}, "must be a table"),
        ({"attestation_token_broker": {"type": "Simple"}}, "Simple token was removed"),
        ({"rvps_config": {"remote_addr": "http://rvps:50003"}}, "remote_addr is obsolete"),
        ({"rvps_config": {"type": "BuiltIn", "storage_type": "Redis"}}, "backends.redis has no url"),
        ({"rvps_config": {"type": "GrpcRemote", "storage_type": "Memory"}}, "BuiltIn"),
        ({"verifier_config": {"dcap_verifier": {"collateral_service": "https://pcs.example", "tcb_update_type": "Early"}}},
         "tcb_update_type"),
        ({"verifier_config": {"dcap_verifier": {"collateral_service": "ftp://pcs.example"}}}, "http"),
        ({"verifier_config": {"tpm_verifier": {"max_trusted_ak_keys": 0}}}, "max_trusted_ak_keys"),
        ({"verifier_config": {"surprise": {}}}, "unknown key"),
        ({"verifier_config": {"nvidia_verifier": {"type": "Cloud"}}}, "Local, Remote"),
        ({"verifier_config": {"nvidia_verifier": {"type": "Local", "url": "https://x"}}}, "unknown key"),
        ({"verifier_config": {"nvidia_dpu_verifier": {}}}, "root_ca_cert_path is required"),
    ],
)
def test_refused_as_configs(data: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        AsConfig.parse(data, tmp_path)


def test_rvps_store_both_names_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        RvpsConfig.parse({"storage": {"storage_type": "Memory"}, "storage_backend": {"storage_type": "Memory"}}, tmp_path)


def test_rvps_storage_type_override(tmp_path: Path) -> None:
    config = AsConfig.parse({"storage_backend": {"storage_type": "Sqlite"}, "rvps_config": {"type": "BuiltIn", "storage_type": "Memory"}},
                            tmp_path)
    assert config.storage.storage_type == "Sqlite"
    assert config.rvps.storage is not None and config.rvps.storage.storage_type == "Memory"


def test_dcap_settings(tmp_path: Path) -> None:
    config = AsConfig.parse({"verifier_config": {"dcap_verifier": {"collateral_service": "file:///srv/collateral.json",
                                                                   "tcb_update_type": "standard"}}}, tmp_path)
    assert config.dcap is not None
    assert (config.dcap.collateral_dir, config.dcap.collateral_service) == (Path("/srv/collateral.json"), None)
    assert config.dcap.tcb_update_type == "standard"
    tool_file = tmp_path / "pcs-client-tool.json"
    tool_file.write_text('{"collaterals": {"tcbinfos": []}}')
    offline = AsConfig.parse({"verifier_config": {"dcap_verifier": {"collateral_service": tool_file.as_uri()}}}, tmp_path)
    with pytest.raises(ConfigError, match="Intel PCS Client Tool file"):
        build_tdx_verifier(offline.dcap, None)


def test_trusted_ak_keys_dir(tmp_path: Path) -> None:
    path = materialise("as/docs-tpm-verifier.json", tmp_path)
    config = AsConfig.parse(json.loads(path.read_text()), tmp_path)
    assert config.tpm is not None
    assert len(build_tpm_verifier(config.tpm).trust.trusted_aks) == 1
    ak_dir = tmp_path / "tpm" / "trusted_ak_keys"
    for n in range(3):
        shutil.copyfile(ak_dir / "ak.pem", ak_dir / f"copy{n}.pem")
    (ak_dir / ".hidden").write_text("skipped")
    small = AsConfig.parse({"verifier_config": {"tpm_verifier": {"trusted_ak_keys_dir": str(ak_dir), "max_trusted_ak_keys": 3}}}, tmp_path)
    with pytest.raises(ConfigError, match="more than max_trusted_ak_keys = 3"):
        build_tpm_verifier(small.tpm)
    (ak_dir / "copy0.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"copy0\.pem is not an RSA/EC public key"):
        build_tpm_verifier(config.tpm)
    (ak_dir / "copy0.pem").write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        build_tpm_verifier(config.tpm)


# --- real processes ---------------------------------------------------------------------------------------------------


def _start_rvps(directory: Path, fixture: str) -> tuple[Proc, int]:
    port = free_port()
    config = materialise(fixture, directory)
    return Proc([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{port}"], directory / "rvps.log", port=port), port


def _start_as(directory: Path, fixture: str, rvps_port: int) -> tuple[Proc, int]:
    port = free_port()
    config = materialise(fixture, directory, rvps_port)
    proc = Proc([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{port}", "--workers", "1"],
                directory / "as.log", port=port)
    return proc, port


@pytest.fixture(scope="module")
def remote_rvps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`rvps` from upstream's docker-compose `rvps.json` (its obsolete store format)."""
    directory = tmp_path_factory.mktemp("rvps")
    proc, port = _start_rvps(directory, "rvps/docker-compose-rvps.json")
    assert "accepted with differences from upstream" in proc.output()
    yield port
    assert proc.stop() == 0


async def _healthy(port: int, service: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _message(values: dict[str, Any]) -> str:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": payload})


async def test_rvps_readme_memory_starts(tmp_path: Path) -> None:
    proc, port = _start_rvps(tmp_path, "rvps/readme-memory.json")
    try:
        await _healthy(port, "reference.ReferenceValueProviderService")
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize(
    "fixture",
    ["as/cca-as-config.json", "as/docs-tpm-verifier.json", "as/docs-nvidia-remote.json", "as/docs-dcap.json", "as/k8s-base-as-config.json",
     "as/tests-example2.json"],
)
async def test_as_starts(fixture: str, remote_rvps: int, tmp_path: Path) -> None:
    proc, port = _start_as(tmp_path, fixture, remote_rvps)
    try:
        await _healthy(port, "attestation.AttestationService")
        name = f"compat_{Path(fixture).stem.replace('-', '_')}"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=_message({name: ["1"]})))
            reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
            assert json.loads(reply.reference_value_results) == ["1"]
        if "GrpcRemote" in (tmp_path / Path(fixture).name).read_text():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{remote_rvps}") as channel:  # it went to the configured RVPS
                stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
                reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id=name))
                assert json.loads(reply.reference_value_results) == ["1"]
        if "nvidia" in fixture:
            await _nvidia_refused(port)
    finally:
        assert proc.stop() == 0


async def _nvidia_refused(port: int) -> None:
    """With upstream's nvidia_verifier table accepted, NVIDIA evidence is still refused, saying why."""
    evidence = base64.urlsafe_b64encode(b'{"device_evidence_list": []}').decode().rstrip("=")
    request = attestation_pb2.AttestationRequest(
        verification_requests=[attestation_pb2.IndividualAttestationRequest(tee="nvidia", evidence=evidence)], policy_ids=["default"]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await attestation_pb2_grpc.AttestationServiceStub(channel).AttestationEvaluate(request)
    assert "NVIDIA GPU evidence is not verified" in str(refused.value.details())


async def test_grpc_as_upstream_tls_flags(tmp_path: Path) -> None:
    """Upstream's `-t/--https-pubkey-cert` and `-k/--https-prikey` serve over TLS (config from upstream's docs)."""
    ca_key, ca = make_ca("compat test CA")
    key, cert = issue_leaf(ca_key, ca, "as", ip_addresses=("127.0.0.1",))
    (tmp_path / "as.pem").write_bytes(pem_cert(cert))
    (tmp_path / "as.key").write_bytes(pem_private_key(key))
    config = materialise("as/docs-rvps-extractors-snippet.json", tmp_path)
    port = free_port()
    proc = Proc([script("grpc-as"), "-c", str(config), "-s", f"127.0.0.1:{port}", "--workers", "1",
                 "-t", str(tmp_path / "as.pem"), "-k", str(tmp_path / "as.key")], tmp_path / "as.log", port=port)
    try:
        credentials = grpc.ssl_channel_credentials(pem_cert(ca))
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="attestation.AttestationService"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert proc.stop() == 0


def test_grpc_as_tls_flags_go_together(tmp_path: Path) -> None:
    config = materialise("as/docs-rvps-extractors-snippet.json", tmp_path)
    lone = subprocess.run([script("grpc-as"), "-c", str(config), "-t", str(tmp_path / "as.pem")], capture_output=True, text=True,
                          timeout=60)
    assert lone.returncode == 1 and "go together" in lone.stderr


async def test_builtin_rvps_storage_type_override_serves(tmp_path: Path) -> None:
    """`rvps_config.storage_type` gives the built-in reference values their own store (here Memory beside Sqlite)."""
    config = tmp_path / "as.json"
    body = {"storage_backend": {"storage_type": "Sqlite"}, "rvps_config": {"type": "BuiltIn", "storage_type": "Memory"}}
    config.write_text(json.dumps(body))
    port = free_port()
    proc = Proc([script("grpc-as"), "-c", str(config), "-s", f"127.0.0.1:{port}", "--workers", "1"], tmp_path / "as.log", port=port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            await stub.RegisterReferenceValue(pb.ReferenceValueRegisterRequest(message=_message({"compat_override": [2]})))
            reply = await stub.QueryReferenceValue(pb.ReferenceValueQueryRequest(reference_value_id="compat_override"))
            assert json.loads(reply.reference_value_results) == [2]
        assert "rvps_config.storage_type: Memory" in proc.output()
    finally:
        assert proc.stop() == 0


def test_parse_sections_for_an_embedding_kbs(tmp_path: Path) -> None:
    """The KBS's `[attestation_service]` (coco_as_builtin): the AS keys are read, the rest is left to the caller."""
    kbs_table = ConfigTable({"type": "coco_as_builtin", "timeout": 5, "storage_type": "Memory", "rvps_config": {"type": "BuiltIn"},
                             "attestation_token_broker": {"duration_min": 7}, "verifier_config": {"nvidia_verifier": {"type": "Local"}}},
                            "config kbs.toml.attestation_service")
    config = parse_sections(kbs_table, StorageConfig(), tmp_path)
    assert (config.storage.storage_type, config.token.duration_min) == ("Memory", 7)
    assert kbs_table.string("type") == "coco_as_builtin" and kbs_table.integer("timeout", 0) == 5
    kbs_table.finish()
    with pytest.raises(ConfigError, match="unknown key"):
        ConfigTable({"rvps_config": {"surprise": 1}}, "x").table("rvps_config").finish()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in x.rvps_config: surprise"):
        parse_sections(ConfigTable({"rvps_config": {"surprise": 1}}, "x"), StorageConfig(), tmp_path)


def test_a_file_gets_one_warning_line_and_errors_name_the_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "as-config.json"
    path.write_text(json.dumps({"work_dir": "/var/lib/as", "verifier_config": {"nvidia_verifier": {"type": "Local"}}}))
    with caplog.at_level(logging.WARNING):
        AsConfig.load(path)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"config {path}: accepted with differences from upstream: config.work_dir: ")
    assert "verifier_config.nvidia_verifier accepted but not used" in line and line.count(str(path)) == 1
    path.write_text(json.dumps({"rvps_config": {"type": "GrpcRemote", "address": "nowhere"}}))
    with pytest.raises(ConfigError) as refused:
        AsConfig.load(path)
    assert str(refused.value.detail) == f"config {path}: rvps_config.address: 'nowhere' is not host:port"
