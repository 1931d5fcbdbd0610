"""Argument and input errors of the three tools, without any server running."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs import free_port
from tests.tools.stack import clean_env, free_ports, run_tool


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--no-such-flag", "attest"],
        ["--url", "ftp://example", "attest"],
        ["get-resource"],
        ["get-resource", "--path", "only/two"],
        ["get-resource", "--path", "a/../b"],
        ["get-resource", "--path", "a/b/c", "--attestation-token", "tok"],
        ["get-resource", "--path", "a/b/c", "--attestation-token", "tok", "--tee-key-file", "k", "version = 1"],
        ["config", "set-resource-policy"],
        ["config", "set-resource-policy", "--allow-all", "--deny-all"],
        ["config", "--auth-private-key", "k", "--admin-token-file", "t", "delete-resource", "--path", "a/b/c"],
        ["config", "set-sample-reference-value", "name", "abc", "--as-integer"],
        ["config", "set-sample-reference-value", "name", "yes", "--as-bool"],
    ],
)
def test_kbs_client_usage_errors_exit_2(args: list[str]) -> None:
    result = run_tool("kbs-client", *args)
    assert result.returncode == 2, result.stderr
    assert "usage: kbs-client" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["query", "--addr", "ftp://host:1"],
        ["query", "--addr", "no-port"],
        ["delete"],
        ["register"],
        ["frobnicate"],
    ],
)
def test_rvps_tool_usage_errors_exit_2(args: list[str]) -> None:
    result = run_tool("rvps-tool", *args)
    assert result.returncode == 2, result.stderr
    assert "usage: rvps-tool" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--kbs-port", "0"], "not a TCP port"),
        (["run", "--kbs-port", "9000", "--as-port", "9000"], "the ports must differ"),
        (["run", "--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["run", "--host", "192.0.2.10"], "refusing plain HTTP on the non-loopback address 192.0.2.10"),
        (["run", "--host", "not-an-ip"], "is not an IP address"),
        (["guest"], "--kbs-url"),
        (["guest", "--kbs-url", "kbs.example:8080"], "is not an http:// or https:// URL"),
        (["guest", "pull-image", "registry.example/app:v1"], "--bundle"),
        (["guest", "--kbs-url", "http://k:8080", "--image-decryption-key", "file:///k.pem"], "scheme must be kbs"),
    ],
)
def test_trustee_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_tool("trustee", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "trustee-data").exists()


def test_kbs_client_unreachable_kbs_is_one_clear_line() -> None:
    result = run_tool("kbs-client", "--url", f"http://127.0.0.1:{free_port()}", "config", "get-resource-policy")
    assert result.returncode == 1
    assert result.stderr.startswith("error: UpstreamUnavailable: cannot reach the KBS")
    assert len(result.stderr.strip().splitlines()) == 1


def test_kbs_client_missing_resource_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    result = run_tool("kbs-client", "config", "set-resource", "--path", "a/b/c", "--resource-file", str(missing))
    assert result.returncode == 1
    assert f"--resource-file {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_kbs_client_bad_tee_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    result = run_tool("kbs-client", "--url", f"http://127.0.0.1:{free_port()}", "attest", "--tee-key-file", str(key))
    assert result.returncode == 1
    assert "error: MalformedRequest: TEE key is not a PEM private key" in result.stderr


def test_rvps_tool_unreachable_rvps_exits_1() -> None:
    result = run_tool("rvps-tool", "query", "--addr", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: UpstreamUnavailable: RVPS unavailable")


@pytest.mark.parametrize("command, flags", [
    ("run", ("--kbs-port", "--as-port", "--rvps-port")),
    ("guest", ("--rest-port", "--aa-port", "--cdh-port")),
])
@pytest.mark.parametrize("busy_index", [0, 1, 2])
def test_trustee_refuses_a_busy_port_naming_its_flag(tmp_path: Path, command: str, flags: tuple[str, ...], busy_index: int) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = free_ports(3)
        ports[busy_index] = port
        args = [arg for flag, value in zip(flags, ports, strict=True) for arg in (flag, str(value))]
        extra = ["--kbs-url", "http://127.0.0.1:9"] if command == "guest" else []
        result = run_tool("trustee", command, "--data-dir", str(tmp_path / "d"), *extra, *args, env=clean_env())
    assert result.returncode == 1, result.stderr
    assert f"error: cannot use port {port} on 127.0.0.1" in result.stderr
    assert f"(choose another with {flags[busy_index]})" in result.stderr


def test_trustee_run_rejects_unreadable_tls_files(tmp_path: Path) -> None:
    ports = [str(p) for p in free_ports(3)]
    result = run_tool("trustee", "run", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(tmp_path / "c.pem"),
                      "--tls-key", str(tmp_path / "k.pem"), "--kbs-port", ports[0], "--as-port", ports[1], "--rvps-port", ports[2])
    assert result.returncode == 1
    assert f"cannot read --tls-cert {tmp_path / 'c.pem'}" in result.stderr


def test_trustee_guest_pull_image_without_a_cdh_is_one_clear_line(tmp_path: Path) -> None:
    result = run_tool("trustee", "guest", "pull-image", "registry.example/app:v1", "--bundle", str(tmp_path / "b"),
                      "--cdh-addr", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "confidential data hub" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "b").exists()
