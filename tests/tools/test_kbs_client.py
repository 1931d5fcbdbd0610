"""`kbs-client` against a real `trustee run` (RVPS, AS and KBS processes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from kbs_client.policies import ALLOW_ALL, DENY_ALL

from tests.tools.stack import TrusteeRun, clean_env, run_tool

SECRET = b"the answer is 42\n\x00\xff binary too"


def kbs_client(stack: TrusteeRun, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    result = run_tool("kbs-client", "--url", stack.url, *args, cwd=cwd)
    return result.returncode, result.stdout, result.stderr


def admin(stack: TrusteeRun, *args: str) -> tuple[int, str, str]:
    return kbs_client(stack, "config", "--admin-token-file", str(stack.admin_token), *args)


@pytest.fixture(scope="module")
def provisioned(trustee: TrusteeRun, tmp_path_factory: pytest.TempPathFactory) -> TrusteeRun:
    """Allow-all resource policy and the secret `default/test/secret`."""
    secret_file = tmp_path_factory.mktemp("secret") / "secret.bin"
    secret_file.write_bytes(SECRET)
    code, _, err = admin(trustee, "set-resource-policy", "--allow-all")
    assert code == 0, err
    code, _, err = admin(trustee, "set-resource", "--path", "default/test/secret", "--resource-file", str(secret_file))
    assert code == 0, err
    return trustee


@pytest.fixture
def tee_key(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "tee.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def test_get_resource_prints_base64_of_the_secret(provisioned: TrusteeRun) -> None:
    code, out, err = kbs_client(provisioned, "get-resource", "--path", "default/test/secret")
    assert code == 0, err
    assert base64.b64decode(out.strip(), validate=True) == SECRET


def test_get_resource_policy_prints_the_rego_text(provisioned: TrusteeRun) -> None:
    code, out, err = admin(provisioned, "get-resource-policy")
    assert code == 0, err
    assert out == ALLOW_ALL


def test_deny_all_then_allow_all_switches_release(provisioned: TrusteeRun) -> None:
    assert admin(provisioned, "set-resource-policy", "--deny-all")[0] == 0
    try:
        assert admin(provisioned, "get-resource-policy")[1] == DENY_ALL
        code, out, err = kbs_client(provisioned, "get-resource", "--path", "default/test/secret")
        assert code == 1
        assert out == ""
        assert "error: PolicyDeny" in err
    finally:
        assert admin(provisioned, "set-resource-policy", "--allow-all")[0] == 0


def test_delete_resource_removes_it(provisioned: TrusteeRun, tmp_path: Path) -> None:
    doomed = tmp_path / "doomed"
    doomed.write_bytes(b"short-lived")
    assert admin(provisioned, "set-resource", "--path", "default/test/doomed", "--resource-file", str(doomed))[0] == 0
    code, out, _ = kbs_client(provisioned, "get-resource", "--path", "default/test/doomed")
    assert code == 0 and base64.b64decode(out) == b"short-lived"
    code, _, err = admin(provisioned, "delete-resource", "--path", "default/test/doomed")
    assert code == 0, err
    code, out, err = kbs_client(provisioned, "get-resource", "--path", "default/test/doomed")
    assert code == 1
    assert err.startswith("error: ")


def test_invalid_attestation_policy_names_the_error_variant(trustee: TrusteeRun, tmp_path: Path) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text("package policy\nthis is { not rego\n")
    code, _, err = admin(trustee, "set-attestation-policy", "--policy-file", str(bad))
    assert code == 1
    assert err.startswith("error: PolicyEngineError: ")
    assert len(err.strip().splitlines()) == 1


def test_valid_attestation_policy_under_another_id_is_accepted(trustee: TrusteeRun, tmp_path: Path) -> None:
    good = tmp_path / "good.rego"
    good.write_text("package policy\nimport rego.v1\ndefault executables := 33\n")
    code, _, err = admin(trustee, "set-attestation-policy", "--policy-file", str(good), "--id", "unused_cpu")
    assert code == 0, err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["svn.min", "3", "--as-integer"], [3]),
        (["launch.digest", "abcde"], ["abcde"]),
        (["debug.allowed", "false", "--as-bool", "--as-single-value"], False),
        (["count.single", "7", "--as-integer", "--as-single-value"], 7),
    ],
)
def test_sample_reference_value_round_trip(trustee: TrusteeRun, flags: list[str], expected: object) -> None:
    code, _, err = admin(trustee, "set-sample-reference-value", *flags)
    assert code == 0, err
    code, out, err = admin(trustee, "get-reference-value", "--id", flags[0])
    assert code == 0, err
    assert json.loads(out) == expected


def test_auth_private_key_signs_a_working_token(trustee: TrusteeRun) -> None:
    key = trustee.data_dir / "admin" / "private.key"
    code, _, err = kbs_client(trustee, "config", "--auth-private-key", str(key), "get-resource-policy")
    assert code == 0, err


def test_auth_with_an_unknown_key_is_refused(trustee: TrusteeRun, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    code, _, err = kbs_client(trustee, "config", "--auth-private-key", str(other), "set-resource-policy", "--allow-all")
    assert code == 1
    assert err.startswith("error: AdminAuthAccess")


def test_without_any_token_admin_calls_are_refused(trustee: TrusteeRun, tmp_path: Path) -> None:
    result = run_tool("kbs-client", "--url", trustee.url, "config", "get-resource-policy", cwd=tmp_path,
                      env=clean_env(HOME=str(tmp_path)))
    assert result.returncode == 1
    assert result.stderr.startswith("error: AdminAuthAccess")


def test_default_token_is_read_from_trustee_data_in_cwd(trustee: TrusteeRun) -> None:
    assert trustee.data_dir.name == "trustee-data"
    code, _, err = kbs_client(trustee, "config", "get-resource-policy", cwd=trustee.data_dir.parent)
    assert code == 0, err


def test_admin_token_file_from_environment(trustee: TrusteeRun, tmp_path: Path) -> None:
    env = clean_env(KBS_CLIENT_ADMIN_TOKEN_FILE=str(trustee.admin_token), KBS_CLIENT_URL=trustee.url)
    result = run_tool("kbs-client", "config", "get-resource-policy", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_attest_prints_an_ear_token(trustee: TrusteeRun) -> None:
    code, out, err = kbs_client(trustee, "attest")
    assert code == 0, err
    token = out.strip()
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "ES256"
    assert "sample" in claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]


def test_passport_mode_uses_the_token_and_its_key(provisioned: TrusteeRun, tee_key: Path, tmp_path: Path) -> None:
    code, out, err = kbs_client(provisioned, "attest", "--tee-key-file", str(tee_key))
    assert code == 0, err
    token_file = tmp_path / "token"
    token_file.write_text(out)
    code, out, err = kbs_client(provisioned, "get-resource", "--path", "default/test/secret",
                                "--attestation-token", str(token_file), "--tee-key-file", str(tee_key))
    assert code == 0, err
    assert base64.b64decode(out.strip()) == SECRET


def test_passport_mode_with_another_key_cannot_open_the_resource(provisioned: TrusteeRun, tee_key: Path, tmp_path: Path) -> None:
    code, out, _ = kbs_client(provisioned, "attest", "--tee-key-file", str(tee_key))
    assert code == 0
    token_file = tmp_path / "token"
    token_file.write_text(out)
    other = tmp_path / "other.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    code, out, err = kbs_client(provisioned, "get-resource", "--path", "default/test/secret",
                                "--attestation-token", str(token_file), "--tee-key-file", str(other))
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")


def test_unknown_reference_value_exits_1_with_the_kbs_variant(trustee: TrusteeRun) -> None:
    code, out, err = admin(trustee, "get-reference-value", "--id", "never.set")
    assert code == 1
    assert out == ""
    assert err.startswith("error: ReferenceValueNotFound: ")
    assert "never.set" in err


def test_init_data_reaches_the_token(trustee: TrusteeRun) -> None:
    init_data = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"note.toml" = "hello = 1"\n'
    code, out, err = kbs_client(trustee, "attest", init_data)
    assert code == 0, err
    payload = out.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["init_data_claims"] == {"note.toml": "hello = 1"}


def test_enable_sample_device_adds_a_gpu_submod(trustee: TrusteeRun) -> None:
    result = run_tool("kbs-client", "--url", trustee.url, "attest", env=clean_env(ENABLE_SAMPLE_DEVICE="1"))
    assert result.returncode == 0, result.stderr
    payload = result.stdout.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert sorted(claims["submods"]) == ["cpu0", "gpu0"]
