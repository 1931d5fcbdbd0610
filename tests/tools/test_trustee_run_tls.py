"""`trustee run --tls`: generated CA and certificates, HTTPS KBS, mutual TLS from KBS to AS to RVPS, a full sample flow.

The KBS listens on the wildcard address (the non-loopback case `--tls`
exists for) and is reached through 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from trustee_cli.configs import ServerPaths, ServerSettings, kbs_config
from trustee_cli.server import banner

from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool

pytestmark = pytest.mark.e2e

SECRET = b"tls e2e secret \x00\xff"
RESOURCE = "default/tls/secret"
TLS_FILES = ("ca", "kbs", "as", "rvps", "kbs-client", "as-client")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrusteeRun]:
    base = tmp_path_factory.mktemp("tls-run")
    server = TrusteeRun(base / "trustee-data", base / "trustee.log", extra=("--tls", "--host", "0.0.0.0", "--tls-san", "kbs.example"))
    server.url = server.url.replace("http://", "https://")
    yield server
    server.stop()


def tls_dir(stack: TrusteeRun) -> Path:
    return stack.data_dir / "tls"


def ca(stack: TrusteeRun) -> str:
    return str(tls_dir(stack) / "ca.pem")


def kbs_client(stack: TrusteeRun, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("kbs-client", "--url", stack.url, "--cert-file", ca(stack), *args)


def admin(stack: TrusteeRun, *args: str) -> str:
    result = kbs_client(stack, "config", "--admin-token-file", str(stack.admin_token), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def snapshot(stack: TrusteeRun) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tls_dir(stack).iterdir())}


def test_banner_names_the_ca_and_https(stack: TrusteeRun) -> None:
    assert f"KBS   https://127.0.0.1:{stack.kbs_port}" in stack.banner
    assert f"TLS CA {ca(stack)}" in stack.banner
    assert f"--cert-file {ca(stack)}" in stack.banner
    assert f"AS    grpcs://127.0.0.1:{stack.as_port} (mutual TLS)" in stack.banner


def test_keys_are_owner_only_and_certificates_carry_the_names(stack: TrusteeRun) -> None:
    assert stat.S_IMODE(tls_dir(stack).stat().st_mode) == 0o700
    for name in TLS_FILES:
        assert stat.S_IMODE((tls_dir(stack) / f"{name}.key").stat().st_mode) == 0o600, name
        assert (tls_dir(stack) / f"{name}.pem").exists()
    kbs = x509.load_pem_x509_certificates((tls_dir(stack) / "kbs.pem").read_bytes())[0]
    san = kbs.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kbs.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def test_configs_wire_mutual_tls_between_the_services(stack: TrusteeRun) -> None:
    data, tls = stack.data_dir, tls_dir(stack)
    kbs = tomllib.loads((data / "kbs" / "config.toml").read_text())
    assert kbs["http_server"]["certificate"] == str(tls / "kbs.pem")
    assert kbs["attestation_service"] == {
        "type": "coco_as_grpc", "as_addr": f"https://127.0.0.1:{stack.as_port}", "ca_certificate": str(tls / "ca.pem"),
        "certificate": str(tls / "kbs-client.pem"), "private_key": str(tls / "kbs-client.key"),
    }
    as_config = tomllib.loads((data / "as" / "config.toml").read_text())
    assert as_config["tls"] == {"certificate": str(tls / "as.pem"), "private_key": str(tls / "as.key"), "client_ca": str(tls / "ca.pem")}
    assert as_config["rvps_config"]["address"] == f"https://127.0.0.1:{stack.rvps_port}"
    assert as_config["rvps_config"]["certificate"] == str(tls / "as-client.pem")
    rvps = tomllib.loads((data / "rvps" / "config.toml").read_text())
    assert rvps["tls"]["client_ca"] == str(tls / "ca.pem")


@pytest.fixture(scope="module")
def provisioned(stack: TrusteeRun, tmp_path_factory: pytest.TempPathFactory) -> TrusteeRun:
    """Admin writes through the KBS: AS policy store and RVPS (via the AS proxy), both over mutual TLS."""
    secret = tmp_path_factory.mktemp("secret") / "secret.bin"
    secret.write_bytes(SECRET)
    admin(stack, "set-resource-policy", "--allow-all")
    admin(stack, "set-resource", "--path", RESOURCE, "--resource-file", str(secret))
    admin(stack, "set-sample-reference-value", "tls.flow", "yes")
    return stack


def test_sample_attestation_flow_over_tls(provisioned: TrusteeRun) -> None:
    """A reference value written KBS -> AS -> RVPS reads back; a sample guest attests and gets the secret over HTTPS."""
    stack = provisioned
    assert "yes" in admin(stack, "get-reference-value", "--id", "tls.flow")
    token = kbs_client(stack, "attest")
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2
    fetched = kbs_client(stack, "get-resource", "--path", RESOURCE)
    assert fetched.returncode == 0, fetched.stderr
    assert base64.b64decode(fetched.stdout.strip(), validate=True) == SECRET
    untrusted = run_tool("kbs-client", "--url", stack.url, "get-resource", "--path", RESOURCE)
    assert untrusted.returncode == 1 and "UpstreamUnavailable" in untrusted.stderr


def test_guest_stack_trusts_the_ca(provisioned: TrusteeRun, tmp_path: Path) -> None:
    stack = provisioned
    rest, aa, cdh = free_ports(3)
    guest = Proc([script("trustee"), "guest", "--kbs-url", stack.url, "--kbs-cert", ca(stack), "--rest-port", str(rest),
                  "--aa-port", str(aa), "--cdh-port", str(cdh), "--data-dir", str(tmp_path / "guest")],
                 tmp_path / "guest.log", port=rest, env=clean_env(), timeout=120)
    try:
        status, body = asyncio.run(_get(f"http://127.0.0.1:{rest}/cdh/resource/{RESOURCE}"))
        assert status == 200, body
        assert body == SECRET
    finally:
        guest.stop()


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as response:
        return response.status, await response.read()


def test_internal_services_refuse_callers_without_a_client_certificate(stack: TrusteeRun) -> None:
    tls = tls_dir(stack)
    for port in (stack.as_port, stack.rvps_port):
        address = f"https://127.0.0.1:{port}"
        assert run_tool("rvps-tool", "query", "-a", address, "--ca", str(tls / "ca.pem")).returncode == 1
        assert run_tool("rvps-tool", "query", "-a", f"127.0.0.1:{port}").returncode == 1
        ok = run_tool("rvps-tool", "query", "-a", address, "--ca", str(tls / "ca.pem"), "--cert", str(tls / "kbs-client.pem"),
                      "--key", str(tls / "kbs-client.key"))
        assert ok.returncode == 0, ok.stderr


def test_kbs_refuses_tls_12(stack: TrusteeRun) -> None:
    context = ssl.create_default_context(cafile=ca(stack))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", stack.kbs_port), timeout=10) as raw:
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    context = ssl.create_default_context(cafile=ca(stack))
    with socket.create_connection(("127.0.0.1", stack.kbs_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"


def test_restart_reuses_the_material_and_reissues_only_what_changed(tmp_path: Path) -> None:
    data = tmp_path / "trustee-data"
    first = TrusteeRun(data, tmp_path / "first.log", extra=("--tls",))
    first.stop()
    before = snapshot(first)
    second = TrusteeRun(data, tmp_path / "second.log", extra=("--tls",))
    second.stop()
    assert snapshot(second) == before
    third = TrusteeRun(data, tmp_path / "third.log", extra=("--tls", "--tls-san", "10.0.0.7"))
    third.stop()
    after = snapshot(third)
    assert {n for n in before if before[n] != after[n]} == {"kbs.pem", "kbs.key"}
    kbs = x509.load_pem_x509_certificates(after["kbs.pem"])[0]
    san = kbs.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.7" in {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    for name in ("ca.pem", "ca.key"):
        (data / "tls" / name).unlink()
    fourth = TrusteeRun(data, tmp_path / "fourth.log", extra=("--tls",))
    fourth.stop()
    renewed = snapshot(fourth)
    assert all(renewed[n] != after[n] for n in after), "a new CA re-issues every certificate"
    ca_cert = x509.load_pem_x509_certificate(renewed["ca.pem"])
    for name in TLS_FILES[1:]:
        x509.load_pem_x509_certificates(renewed[f"{name}.pem"])[0].verify_directly_issued_by(ca_cert)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--tls", "--insecure-http"), "--insecure-http cannot be combined with --tls"),
        (("--tls-san", "kbs.example"), "--tls-san needs --tls"),
        (("--tls", "--tls-san", "bad name!"), "--tls-san 'bad name!' is neither an IP address nor a DNS name"),
        (("--host", "0.0.0.0"), "give --tls (or --tls-cert and --tls-key), or --insecure-http"),
    ],
)
def test_tls_flag_misuse_is_a_usage_error(tmp_path: Path, flags: tuple[str, ...], expected: str) -> None:
    result = run_tool("trustee", "run", "--data-dir", str(tmp_path / "d"), *flags)
    assert result.returncode == 2
    assert expected in result.stderr


def test_tls_with_own_kbs_certificate_keeps_it_for_https(tmp_path: Path) -> None:
    """`--tls --tls-cert/--tls-key`: the KBS serves the given certificate, the internal links still use the local CA."""
    settings = ServerSettings("127.0.0.1", 8080, 50004, 50003, tmp_path / "own.pem", tmp_path / "own.key", tls=True)
    paths = ServerPaths.under(tmp_path / "data")
    kbs = kbs_config(paths, settings)
    assert kbs["http_server"]["certificate"] == str(tmp_path / "own.pem")
    assert kbs["attestation_service"]["certificate"] == str(paths.tls_cert("kbs-client"))
    assert f"--cert-file {tmp_path / 'own.pem'}" in banner(paths, settings)
    assert "(KBS -> AS -> RVPS links; the KBS serves --tls-cert)" in banner(paths, settings)
