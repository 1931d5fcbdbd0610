"""`kbs-client` as upstream scripts call it: flag spellings, token locations, `--type`, `--default`.

The server tests run the real client against the package's real `trustee
run`. Each sets `HOME` and the working directory to fresh temporary
directories, so no admin token of the machine running the tests is found.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from kbs_client.policies import ALLOW_ALL

from tests.tools.stack import TrusteeRun, clean_env, run_tool

#: Upstream's kbs-client (tools/kbs-client/src/main.rs, v0.21 and main): each command and its flags.
UPSTREAM_FLAGS = {
    (): ["--url", "--cert-file", "--help", "--version", "-h", "-V"],
    ("attest",): ["--tee-key-file", "INIT_DATA"],
    ("get-resource",): ["--path", "--tee-key-file", "--attestation-token", "INIT_DATA"],
    ("config",): ["--admin-token-file", "--auth-private-key"],
    ("config", "set-attestation-policy"): ["--type", "--id", "--policy-file"],
    ("config", "set-resource-policy"): ["--policy-file", "--allow-all", "--deny-all", "--affirming", "--default"],
    ("config", "set-resource"): ["--path", "--resource-file"],
    ("config", "delete-resource"): ["--path"],
    ("config", "get-reference-value"): ["--id"],
    ("config", "set-sample-reference-value"): ["NAME", "VALUE", "--as-integer", "--as-bool", "--as-single-value"],
}


def client(stack: TrusteeRun, *args: str, cwd: Path, home: Path, url: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ("--url", stack.url) if url else ()
    return run_tool("kbs-client", *prefix, *args, cwd=cwd, env=clean_env(HOME=str(home)))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An empty working directory and an empty HOME."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    return tmp_path / "cwd", tmp_path / "home"


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", sorted(UPSTREAM_FLAGS))
def test_every_upstream_flag_is_spelled_the_same(command: tuple[str, ...]) -> None:
    result = run_tool("kbs-client", *command, "--help")
    assert result.returncode == 0, result.stderr
    for flag in UPSTREAM_FLAGS[command]:
        assert flag in result.stdout.replace(",", " ").split(), f"{flag} missing from kbs-client {' '.join(command)} --help"


def test_version_flag() -> None:
    result = run_tool("kbs-client", "-V")
    assert result.returncode == 0
    assert result.stdout.startswith("kbs-client ")


def test_default_url_is_upstreams() -> None:
    result = run_tool("kbs-client", "--help")
    assert "http://127.0.0.1:8080" in result.stdout


def test_token_from_upstream_docker_compose_path(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    put(cwd / "kbs/config/docker-compose/admin-token", trustee.admin_token.read_text() + "\n")
    result = client(trustee, "config", "get-resource-policy", cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr


def test_token_from_home_trustee_admin_token(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    put(home / ".trustee/admin-token", trustee.admin_token.read_text())
    result = client(trustee, "config", "get-resource-policy", cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr


def test_compose_token_is_tried_before_home_and_named_when_refused(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    put(cwd / "kbs/config/docker-compose/admin-token", "not.a.token")
    put(home / ".trustee/admin-token", trustee.admin_token.read_text())
    result = client(trustee, "config", "get-resource-policy", cwd=cwd, home=home)
    assert result.returncode == 1
    assert result.stderr.startswith("error: AdminAuthAccess: ")
    assert "(admin token from ./kbs/config/docker-compose/admin-token)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_token_anywhere_names_every_place_tried(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    result = client(trustee, "config", "set-resource-policy", "--allow-all", cwd=cwd, home=home)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("error: AdminAuthAccess: ")
    assert "no admin token was sent" in line
    for place in ("--admin-token-file", "kbs/config/docker-compose/admin-token", "trustee-data/admin/token",
                  f"{home}/.trustee/admin-token"):
        assert place in line
    assert len(line.splitlines()) == 1


def test_empty_default_token_file_is_named(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    put(home / ".trustee/admin-token", "\n")
    result = client(trustee, "config", "get-resource-policy", cwd=cwd, home=home)
    assert result.returncode == 1
    assert f"{home}/.trustee/admin-token is empty" in result.stderr


def test_url_after_config_as_upstream_docs_write_it(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    result = client(trustee, "config", "--url", trustee.url, "--admin-token-file", str(trustee.admin_token),
                    "get-resource-policy", cwd=cwd, home=home, url=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("policy_type", ["rego", "Rego", "REGO", " rego "])
def test_type_rego_in_any_case_is_accepted_quietly(trustee: TrusteeRun, dirs: tuple[Path, Path], policy_type: str) -> None:
    cwd, home = dirs
    policy = put(cwd / "p.rego", "package policy\nimport rego.v1\ndefault executables := 33\n")
    result = client(trustee, "config", "--admin-token-file", str(trustee.admin_token), "set-attestation-policy",
                    "--type", policy_type, "--id", "parity_cpu", "--policy-file", str(policy), cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_type_other_than_rego_is_accepted_with_a_warning(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    policy = put(cwd / "p.rego", "package policy\nimport rego.v1\ndefault executables := 33\n")
    result = client(trustee, "config", "--admin-token-file", str(trustee.admin_token), "set-attestation-policy",
                    "--type", "opa", "--id", "parity_cpu", "--policy-file", str(policy), cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr
    assert "warning: --type 'opa'" in result.stderr


def test_default_uploads_the_kbs_builtin_policy(trustee: TrusteeRun, dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    admin = ("config", "--admin-token-file", str(trustee.admin_token))
    secret = put(cwd / "secret", "parity")
    assert client(trustee, *admin, "set-resource", "--path", "parity/test/secret", "--resource-file", str(secret),
                  cwd=cwd, home=home).returncode == 0
    assert client(trustee, *admin, "set-resource-policy", "--allow-all", cwd=cwd, home=home).returncode == 0
    try:
        assert base64.b64decode(client(trustee, "get-resource", "--path", "parity/test/secret", cwd=cwd, home=home).stdout) == b"parity"
        result = client(trustee, *admin, "set-resource-policy", "--default", cwd=cwd, home=home)
        assert result.returncode == 0, result.stderr
        shipped = (Path(__file__).parents[2] / "kbs/policies/default.rego").read_text()
        assert client(trustee, *admin, "get-resource-policy", cwd=cwd, home=home).stdout == shipped
        denied = client(trustee, "get-resource", "--path", "parity/test/secret", cwd=cwd, home=home)
        assert denied.returncode == 1
        assert denied.stderr.startswith("error: PolicyDeny")
    finally:
        assert client(trustee, *admin, "set-resource-policy", "--allow-all", cwd=cwd, home=home).returncode == 0
        assert client(trustee, *admin, "get-resource-policy", cwd=cwd, home=home).stdout == ALLOW_ALL


def test_removed_get_reference_values_is_refused_with_the_replacement() -> None:
    result = run_tool("kbs-client", "config", "get-reference-values")
    assert result.returncode == 2
    assert "use `config get-reference-value --id NAME`" in result.stderr
