"""The KBS's HTTPS profile against a real `kbs` process: TLS 1.3 only by default, 1.2 on request, bad keys refused."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kbs.helpers import Kbs, Material, kbs_toml, run_kbs_expect_exit, start_kbs, tls_files
from tests.procs import free_port


def https_toml(material: Material, directory: Path, port: int, extra: str = "") -> str:
    cert, key, _ = tls_files(directory)
    lines = f'insecure_http = false\nprivate_key = "{key}"\ncertificate = "{cert}"\n{extra}'
    return kbs_toml(port, material, directory / "repo", as_port=free_port()).replace("insecure_http = true", lines)


def handshake(port: int, ca_pem: bytes, version: ssl.TLSVersion) -> str:
    """The negotiated protocol of a client limited to `version`; raises `ssl.SSLError` when refused."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


def ca_of(directory: Path) -> bytes:
    return (directory / "tls.pem").read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Kbs]]:
    servers: list[Kbs] = []
    yield servers
    for server in servers:
        assert server.proc.stop() == 0, server.proc.output()


def start(started: list[Kbs], material: Material, directory: Path, extra: str = "") -> tuple[int, bytes]:
    directory.mkdir(parents=True)
    port = free_port()
    started.append(start_kbs(directory, https_toml(material, directory, port, extra), port))
    return port, ca_of(directory)


def test_default_profile_is_tls_13_only(started: list[Kbs], material: Material, tmp_path: Path) -> None:
    port, ca = start(started, material, tmp_path / "default")
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(port, ca, ssl.TLSVersion.TLSv1_2)
    assert 'TLS 1.2 clients are refused (upstream\'s default profile is intermediate: set tls_profile = "intermediate"' \
        in started[-1].proc.output()


@pytest.mark.parametrize("extra", ['tls_min_version = "1.2"', 'tls_profile = "intermediate"', 'tls_profile = "old"'])
def test_tls_12_can_be_enabled(started: list[Kbs], material: Material, tmp_path: Path, extra: str) -> None:
    port, ca = start(started, material, tmp_path / "tls12", extra)
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert "TLS 1.2 clients are refused" not in started[-1].proc.output()


def test_max_version_12_and_ciphers_and_one_group(started: list[Kbs], material: Material, tmp_path: Path) -> None:
    extra = 'tls_profile = "custom"\ntls_max_version = "1.2"\ntls_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384"\ntls_groups = "secp384r1"'
    port, ca = start(started, material, tmp_path / "custom", extra)
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(port, ca, ssl.TLSVersion.TLSv1_3)
    context = ssl.create_default_context(cadata=ca.decode())
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        context.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('tls_profile = "paranoid"', "http_server.tls_profile 'paranoid' is not one of modern, intermediate, old, custom"),
        ('tls_min_version = "1.1"', 'http_server.tls_min_version must be "1.2" or "1.3"'),
        ('tls_max_version = "TLSv1.3"', 'http_server.tls_max_version must be "1.2" or "1.3"'),
        ('tls_min_version = "1.3"\ntls_max_version = "1.2"', "http_server.tls_min_version '1.3' is above tls_max_version '1.2'"),
        ('tls_min_version = "1.2"\ntls_ciphers = "NO-SUCH-CIPHER"', "http_server.tls_ciphers 'NO-SUCH-CIPHER' selects no cipher"),
        ('tls_groups = "X25519MLKEM768:curve-bogus"', "http_server.tls_groups 'X25519MLKEM768:curve-bogus': no key-exchange group OpenSSL"),
        ('tls_groups = "curve-bogus"', "http_server.tls_groups 'curve-bogus': no key-exchange group OpenSSL"),
        ('tls_min_version = "1.2"\ntls_ciphers = "TLS_AES_256_GCM_SHA384"', "names no TLS 1.2 suite but TLS 1.2 is on"),
        ("tls_min_version = 1.2", "http_server.tls_min_version must be str"),
    ],
)
def test_bad_tls_values_are_refused_at_start(material: Material, tmp_path: Path, extra: str, expected: str) -> None:
    code, output = run_kbs_expect_exit(tmp_path, https_toml(material, tmp_path, free_port(), extra))
    assert code == 2, output
    assert expected in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace('timeout = 5', 'timeout = 5\nca_certificate = "/ca.pem"'),
         "attestation_service.ca_certificate needs an https:// address (TLS)"),
        (lambda t: t.replace('as_addr = "http://', 'as_addr = "https://').replace('timeout = 5', 'timeout = 5\ncertificate = "/c.pem"'),
         "attestation_service: certificate and private_key go together"),
        (lambda t: t.replace('as_addr = "http://', 'as_addr = "https://').replace("timeout = 5", 'timeout = 5\nca_certificate = "/no.pem"'),
         "cannot read attestation_service.ca_certificate /no.pem"),
    ],
)
def test_bad_as_client_tls_is_refused_at_start(material: Material, tmp_path: Path, edit: object, expected: str) -> None:
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port())
    code, output = run_kbs_expect_exit(tmp_path, edit(text))  # type: ignore[operator]
    assert code == 2, output
    assert expected in output


def handshake_with_group(port: int, ca_pem: bytes, group: str) -> str:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.set_ecdh_curve(group)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


def test_group_list_uses_the_first_group_openssl_knows(started: list[Kbs], material: Material, tmp_path: Path) -> None:
    """Upstream's colon lists start: unknown hybrids are skipped, the first known group is the one offered."""
    port, ca = start(started, material, tmp_path / "groups", 'tls_groups = "X25519MLKEM768:secp384r1:X25519"\n'
                     'tls_ciphers = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"')
    assert handshake_with_group(port, ca, "secp384r1") == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake_with_group(port, ca, "X25519")
    log = started[-1].proc.output()
    assert "Python's ssl sets one group, secp384r1 is used; not offered: X25519MLKEM768:X25519 (X25519MLKEM768 unknown" in log
    assert "Python's ssl cannot choose TLS 1.3 suites (TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256)" in log
