"""TLS, mutual TLS and the write guard of the real `rvps` and `grpc-as` processes.

Non-loopback cases bind the wildcard address (0.0.0.0) and are reached
through 127.0.0.1 only: the server sees a non-loopback listen address,
the traffic never leaves the machine.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.kbs.helpers import kbs_toml, make_material, start_kbs
from tests.procs import Proc, free_port, script
from trustee_common.pki import ensure_token_signing_material, issue_leaf, make_ca, pem_cert, pem_private_key
from trustee_pb import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

SAMPLE = base64.b64encode(json.dumps({"tls.test": ["v1"]}).encode()).decode()
MESSAGE = json.dumps({"version": "0.1.0", "type": "sample", "payload": SAMPLE})
POLICY_TEXT = b'package policy\nimport rego.v1\n\ntrust_claims := {"hardware": 2, "executables": 3}\n'
POLICY = base64.urlsafe_b64encode(POLICY_TEXT).decode().rstrip("=")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate from another CA.
    rogue_cert: Path
    rogue_key: Path


def _write_leaf(directory: Path, name: str, ca_key: object, ca: object, **names: tuple[str, ...]) -> tuple[Path, Path]:
    key, cert = issue_leaf(ca_key, ca, name, **names)  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(pem_cert(cert))
    key_path.write_bytes(pem_private_key(key))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca = make_ca("grpc test CA")
    (directory / "ca.pem").write_bytes(pem_cert(ca))
    server = _write_leaf(directory, "server", ca_key, ca, ip_addresses=("127.0.0.1",), dns_names=("localhost",))
    client = _write_leaf(directory, "client", ca_key, ca)
    rogue_ca_key, rogue_ca = make_ca("rogue CA")
    rogue = _write_leaf(directory, "rogue", rogue_ca_key, rogue_ca)
    return Pki(directory / "ca.pem", *server, *client, *rogue)


def tls_table(pki: Pki, *, mutual: bool) -> str:
    text = f'[tls]\ncertificate = "{pki.server_cert}"\nprivate_key = "{pki.server_key}"\n'
    return text + (f'client_ca = "{pki.ca}"\n' if mutual else "")


def rvps_config(directory: Path, extra: str = "") -> Path:
    config = directory / "rvps.toml"
    config.write_text(f'[storage_backend]\nstorage_type = "Memory"\n{extra}')
    return config


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def start_rvps(procs: list[Proc], directory: Path, extra: str = "", host: str = "127.0.0.1", *flags: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [script("rvps"), "-c", str(rvps_config(directory, extra)), "-a", f"{host}:{port}", *flags]
    procs.append(Proc(args, directory / "rvps.log", port=port))
    return port


def rvps_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("rvps-tool"), *args], capture_output=True, text=True, timeout=60, check=False)


def register(address: str, message_file: Path, *tls: str) -> subprocess.CompletedProcess[str]:
    return rvps_tool("register", "-a", address, "-p", str(message_file), *tls)


@pytest.fixture(scope="module")
def message_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("msg") / "message.json"
    path.write_text(MESSAGE)
    return path


def test_mutual_tls_rvps_needs_a_client_certificate_from_its_ca(procs: list[Proc], tmp_path: Path, pki: Pki,
                                                                 message_file: Path) -> None:
    port = start_rvps(procs, tmp_path, tls_table(pki, mutual=True))
    address = f"https://127.0.0.1:{port}"
    mine = ("--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key))
    assert register(address, message_file, *mine).returncode == 0
    query = rvps_tool("query", "-a", address, "-r", "tls.test", *mine)
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == ["v1"]
    for refused in (("--ca", str(pki.ca)), ("--ca", str(pki.ca), "--cert", str(pki.rogue_cert), "--key", str(pki.rogue_key))):
        result = rvps_tool("query", "-a", address, *refused)
        assert result.returncode == 1
        assert result.stderr.startswith("error: UpstreamUnavailable"), result.stderr
    plain = rvps_tool("query", "-a", f"127.0.0.1:{port}")
    assert plain.returncode == 1


def test_tls_rvps_is_verified_against_the_given_ca(procs: list[Proc], tmp_path: Path, pki: Pki) -> None:
    port = start_rvps(procs, tmp_path, tls_table(pki, mutual=False))
    ok = rvps_tool("query", "-a", f"https://127.0.0.1:{port}", "--ca", str(pki.ca))
    assert ok.returncode == 0, ok.stderr
    assert rvps_tool("query", "-a", f"https://127.0.0.1:{port}").returncode == 1  # system roots do not know our CA


def test_writes_on_a_non_loopback_rvps_without_mutual_tls_are_refused(procs: list[Proc], tmp_path: Path, pki: Pki,
                                                                     message_file: Path) -> None:
    plain = start_rvps(procs, tmp_path / "plain", "", "0.0.0.0")
    refused = register(f"127.0.0.1:{plain}", message_file)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: AdminAuthAccess: RVPS: write calls are refused"), refused.stderr
    assert "plain-text gRPC on the non-loopback address" in procs[-1].output()
    listed = rvps_tool("query", "-a", f"127.0.0.1:{plain}")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []  # reads keep working, nothing was stored
    deleted = rvps_tool("delete", "-a", f"127.0.0.1:{plain}", "-r", "tls.test")
    assert deleted.stderr.startswith("error: AdminAuthAccess"), deleted.stderr

    server_only = start_rvps(procs, tmp_path / "tls", tls_table(pki, mutual=False), "0.0.0.0")
    result = register(f"https://127.0.0.1:{server_only}", message_file, "--ca", str(pki.ca))
    assert result.stderr.startswith("error: AdminAuthAccess"), result.stderr

    mutual = start_rvps(procs, tmp_path / "mtls", tls_table(pki, mutual=True), "0.0.0.0")
    client = ("--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key))
    result = register(f"https://127.0.0.1:{mutual}", message_file, *client)
    assert result.returncode == 0, result.stderr

    opened = start_rvps(procs, tmp_path / "open", "", "0.0.0.0", "--insecure-allow-writes")
    assert register(f"127.0.0.1:{opened}", message_file).returncode == 0
    assert "open to every caller (--insecure-allow-writes)" in procs[-1].output()


def as_config(directory: Path, rvps_port: int, pki: Pki, *, server_tls: str = "", rvps_tls: bool = True) -> Path:
    keys = ensure_token_signing_material(directory / "keys")
    scheme = "https" if rvps_tls else "http"
    client = (f'ca_certificate = "{pki.ca}"\ncertificate = "{pki.client_cert}"\nprivate_key = "{pki.client_key}"\n'
              if rvps_tls else "")
    config = directory / "as.toml"
    config.write_text(
        '[storage_backend]\nstorage_type = "Memory"\n'
        f'[rvps_config]\ntype = "GrpcRemote"\naddress = "{scheme}://127.0.0.1:{rvps_port}"\n{client}'
        f'[attestation_token_broker.signer]\nkey_path = "{keys.token_key}"\ncert_path = "{keys.token_cert_chain}"\n'
        + server_tls
    )
    return config


def start_as(procs: list[Proc], directory: Path, config: Path, host: str = "127.0.0.1") -> int:
    port = free_port()
    args = [script("grpc-as"), "--config-file", str(config), "--socket", f"{host}:{port}"]
    procs.append(Proc(args, directory / "as.log", port=port))
    return port


def credentials(pki: Pki, *, with_cert: bool = True) -> grpc.ChannelCredentials:
    key = pki.client_key.read_bytes() if with_cert else None
    cert = pki.client_cert.read_bytes() if with_cert else None
    return grpc.ssl_channel_credentials(pki.ca.read_bytes(), key, cert)


async def test_as_to_rvps_over_mutual_tls_and_the_as_write_guard(procs: list[Proc], tmp_path: Path, pki: Pki) -> None:
    """AS (mutual TLS, non-loopback) -> RVPS (mutual TLS): writes through the proxy with a client certificate."""
    rvps_port = start_rvps(procs, tmp_path / "rvps", tls_table(pki, mutual=True))
    config = as_config(tmp_path, rvps_port, pki, server_tls=tls_table(pki, mutual=True))
    as_port = start_as(procs, tmp_path, config, "0.0.0.0")
    async with grpc.aio.secure_channel(f"127.0.0.1:{as_port}", credentials(pki)) as channel:
        proxy = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        await proxy.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=MESSAGE), timeout=30)
        reply = await proxy.QueryReferenceValue(reference_pb2.ReferenceValueQueryRequest(reference_value_id="tls.test"), timeout=30)
        assert json.loads(reply.reference_value_results) == ["v1"]
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        await stub.SetAttestationPolicy(attestation_pb2.SetPolicyRequest(policy_id="tls_cpu", policy=POLICY), timeout=30)
    async with grpc.aio.secure_channel(f"127.0.0.1:{as_port}", credentials(pki, with_cert=False)) as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListPolicies(attestation_pb2.ListPoliciesRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plain_non_loopback_as_refuses_writes_but_serves_reads(procs: list[Proc], tmp_path: Path, pki: Pki) -> None:
    rvps_port = start_rvps(procs, tmp_path / "rvps")
    as_port = start_as(procs, tmp_path, as_config(tmp_path, rvps_port, pki, rvps_tls=False), "0.0.0.0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{as_port}") as channel:
        stub = attestation_pb2_grpc.AttestationServiceStub(channel)
        proxy = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        writes = [
            stub.SetAttestationPolicy(attestation_pb2.SetPolicyRequest(policy_id="tls_cpu", policy=POLICY), timeout=30),
            stub.DeletePolicy(attestation_pb2.DeletePolicyRequest(policy_id="default_cpu"), timeout=30),
            proxy.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=MESSAGE), timeout=30),
            proxy.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id="x"), timeout=30),
        ]
        for call in writes:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "write calls are refused" in (refused.value.details() or "")
            assert ("trustee-error-variant", "AdminAuthAccess") in tuple(refused.value.trailing_metadata() or ())
        listed = await stub.ListPolicies(attestation_pb2.ListPoliciesRequest(), timeout=30)
        assert "default_cpu" in {p.policy_id for p in listed.policies}
        await proxy.ListReferenceValues(reference_pb2.ReferenceValueListRequest(), timeout=30)


def expect_start_failure(args: list[str], timeout: float = 60) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[tls]\ncertificate = "x.pem"\n', "tls: certificate and private_key go together"),
        ('[tls]\nclient_ca = "ca.pem"\n', "tls.client_ca needs tls.certificate and tls.private_key"),
        ('[tls]\ncertificate = "/nonexistent/cert.pem"\nprivate_key = "/nonexistent/key.pem"\n',
         "cannot read tls.certificate /nonexistent/cert.pem"),
        ('[tls]\ncertificate = "PKI/ca.pem"\nprivate_key = "PKI/ca.pem"\n', "tls.private_key PKI/ca.pem is not a PEM PRIVATE KEY"),
        ('[tls]\ncertificate = "PKI/server.pem"\nprivate_key = "PKI/server.key"\nclient_cert = "x"\n', "unknown key(s) in config"),
        ('[tls]\ncertificate = "PKI/server.pem"\nprivate_key = "PKI/client.key"\n',
         "tls.private_key PKI/client.key does not belong to tls.certificate PKI/server.pem"),
    ],
)
def test_bad_rvps_tls_config_is_refused_naming_the_key(tmp_path: Path, pki: Pki, extra: str, expected: str) -> None:
    extra, expected = extra.replace("PKI", str(pki.ca.parent)), expected.replace("PKI", str(pki.ca.parent))
    config = rvps_config(tmp_path, extra)
    stderr = expect_start_failure([script("rvps"), "-c", str(config), "-a", f"127.0.0.1:{free_port()}"])
    assert expected in stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("https://", "http://"), "rvps_config.ca_certificate needs an https:// address (TLS)"),
        (lambda t: t.replace("private_key = ", "private_key_x = "), "rvps_config: certificate and private_key go together"),
        (lambda t: t.replace('ca_certificate = "', 'ca_certificate = "/nonexistent'), "cannot read rvps_config.ca_certificate"),
    ],
)
def test_bad_as_client_tls_config_is_refused_naming_the_key(tmp_path: Path, pki: Pki, edit: object, expected: str) -> None:
    config = as_config(tmp_path, free_port(), pki)
    config.write_text(edit(config.read_text()))  # type: ignore[operator]
    stderr = expect_start_failure([script("grpc-as"), "--config-file", str(config), "--socket", f"127.0.0.1:{free_port()}"])
    assert expected in stderr


def test_kbs_admin_gets_403_when_the_as_refuses_a_write(procs: list[Proc], tmp_path: Path, pki: Pki) -> None:
    """KBS -> plain AS on a non-loopback address: the admin's policy write is a clean 403 naming the reason; attestation still works."""
    rvps_port = start_rvps(procs, tmp_path / "rvps")
    as_port = start_as(procs, tmp_path, as_config(tmp_path, rvps_port, pki, rvps_tls=False), "0.0.0.0")
    material = make_material(tmp_path / "material")
    kbs_port = free_port()
    kbs = start_kbs(tmp_path / "kbs", kbs_toml(kbs_port, material, tmp_path / "repo", as_port=as_port), kbs_port)
    procs.append(kbs.proc)
    token = tmp_path / "admin-token"
    token.write_text(material.admin_token())
    policy = tmp_path / "policy.rego"
    policy.write_bytes(POLICY_TEXT)
    url = f"http://127.0.0.1:{kbs_port}"
    result = subprocess.run([script("kbs-client"), "--url", url, "config", "--admin-token-file", str(token), "set-attestation-policy",
                             "--policy-file", str(policy), "--id", "tls_cpu"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: AdminAuthAccess: "), result.stderr
    assert "write calls are refused" in result.stderr
    attest = subprocess.run([script("kbs-client"), "--url", url, "attest"], capture_output=True, text=True, timeout=60, check=False)
    assert attest.returncode == 0, attest.stderr
