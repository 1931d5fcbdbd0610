"""Start-up, configuration and lifecycle of the real `kbs` process."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.kbs.helpers import (
    ALLOW_ALL,
    Kbs,
    Material,
    ear_claims,
    kbs_toml,
    mint_token,
    policy_body,
    run_kbs_expect_exit,
    start_kbs,
    tls_files,
    untrusted_signing,
    variant,
)
from tests.procs import Proc, free_port, script, wait_port
from trustee_common.b64 import url_decode
from trustee_common.jose import TeeKeyPair


def base(material: Material, tmp_path: Path, **kwargs: object) -> tuple[int, str]:
    port = free_port()
    return port, kbs_toml(port, material, tmp_path / "repo", as_port=free_port(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("[http_server]", "[http_server]\nbogus_key = 1"), "unknown key(s) in config.http_server: bogus_key"),
        (lambda t: t + "\n[unknown_table]\n", "unknown key(s) in config: unknown_table"),
        (lambda t: t.replace('role = "admin",', 'role = "admin", colour = "red",'), "colour"),
        (lambda t: t.replace('"^/kbs/v0/.*$"', '"/kbs/v0/.*"'), "must start with '^/kbs'"),
        (lambda t: t.replace("trusted_certs_paths = [", "trusted_certs_paths_x = ["), "trusted_certs_paths_x"),
        (lambda t: t.replace("insecure_http = true", "insecure_http = false"), "certificate and private_key are required"),
        (lambda t: t.replace('authorization_mode = "AuthenticatedAuthorization"', 'authorization_mode = "Simple"'), "authorization_mode"),
        (lambda t: t.replace("payload_request_size = 2", 'payload_request_size = "2"'), "payload_request_size must be int"),
        (lambda t: t.replace("timeout = 5", "timeout = 0"), "attestation_service.timeout must be > 0"),
        (lambda t: t.replace('name = "resource"', 'name = "nebula-ca"'), "plugin 'nebula-ca' is not supported"),
        (lambda t: t.replace("timeout = 5", "timeout = 5\nappraisal_epoch_ttl_seconds = 61"), "appraisal_epoch_ttl_seconds must be 0..60"),
        (lambda t: t.replace("timeout = 5", "timeout = 5\nappraisal_epoch_ttl_seconds = -1"), "appraisal_epoch_ttl_seconds must be 0..60"),
        (lambda t: t.replace("timeout = 5", "timeout = 5\nappraisal_epoch_ttl_seconds = nan"), "appraisal_epoch_ttl_seconds must be"),
        (lambda t: t + "\n[policy_engine]\nevaluation_timeout = 0\n", "policy_engine.evaluation_timeout must be > 0"),
        (lambda t: t + "\n[policy_engine]\nevaluation_timeout = 301\n", "policy_engine.evaluation_timeout must be <= 300"),
        (lambda t: t + "\n[policy_engine]\nworkers = 0\n", "policy_engine.workers must be >= 1"),
        (lambda t: t + "\n[policy_engine]\npolicy_file = 'x'\n", "unknown key(s) in config.policy_engine: policy_file"),
    ],
)
def test_bad_config_exits_naming_the_problem(tmp_path: Path, material: Material, edit: object, expected: str) -> None:
    _, text = base(material, tmp_path)
    code, output = run_kbs_expect_exit(tmp_path, edit(text))  # type: ignore[operator]
    assert code == 2, output
    assert expected in output
    assert "Traceback" not in output


def test_missing_trust_material_and_admin_table_are_refused(tmp_path: Path, material: Material) -> None:
    _, text = base(material, tmp_path)
    code, output = run_kbs_expect_exit(tmp_path / "a", text.replace(f'trusted_certs_paths = ["{material.ca_cert}"]', ""))
    assert code == 2 and "no trusted verification material" in output
    no_admin = text.split("[admin]")[0] + "[attestation_token]" + text.split("[attestation_token]")[1]
    code, output = run_kbs_expect_exit(tmp_path / "b", no_admin)
    assert code == 2 and "[admin] table is required" in output
    code, output = run_kbs_expect_exit(tmp_path / "c", text.replace(str(material.admin_public), "/nonexistent/admin.pub"))
    assert code == 2 and "/nonexistent/admin.pub" in output


def test_plain_http_on_non_loopback_starts_with_one_warning(tmp_path: Path, material: Material) -> None:
    """`insecure_http = true` is the consent (as upstream); the KBS says so once, loudly."""
    port, text = base(material, tmp_path)
    server = start_kbs(tmp_path / "exposed", text.replace(f'"127.0.0.1:{port}"', f'"0.0.0.0:{port}"'), port)
    try:
        wait_port(port)
    finally:
        assert server.proc.stop() == 0
    log = server.proc.log.read_text()
    assert log.count(f"INSECURE: the KBS serves plain HTTP (insecure_http = true) on non-loopback address(es) 0.0.0.0:{port}") == 1, log


def test_sigterm_stops_cleanly_and_env_config_is_used(tmp_path: Path, material: Material) -> None:
    port, text = base(material, tmp_path)
    config = tmp_path / "kbs.toml"
    config.write_text(text)
    proc = Proc([script("kbs")], tmp_path / "kbs.log", port=port, env={"KBS_CONFIG_FILE": str(config)})
    started = time.monotonic()
    os.killpg(proc.popen.pid, signal.SIGTERM)
    code = proc.popen.wait(10)
    assert code == 0 and time.monotonic() - started < 5
    proc.stop()


@pytest.fixture(scope="module")
def https_kbs(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[tuple[Kbs, bytes]]:
    directory = tmp_path_factory.mktemp("kbs-https")
    cert, key, ca_pem = tls_files(directory)
    port = free_port()
    text = kbs_toml(port, material, directory / "repo", as_port=free_port()).replace(
        "insecure_http = true", f'insecure_http = false\nprivate_key = "{key}"\ncertificate = "{cert}"'
    )
    server = start_kbs(directory, text, port)
    yield server, ca_pem
    server.proc.stop()


async def test_https_serves_a_client_that_trusts_the_ca(https_kbs: tuple[Kbs, bytes], material: Material) -> None:
    server, ca_pem = https_kbs
    context = ssl.create_default_context(cadata=ca_pem.decode())
    url = f"https://127.0.0.1:{server.port}/kbs/v0/resource-policy"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, ssl=context, headers={"Authorization": f"Bearer {material.admin_token()}"}) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url, ssl=ssl.create_default_context()):
                pass
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url.replace("https", "http")):
                pass


async def test_admin_modes_and_issuer_audience(tmp_path: Path, material: Material) -> None:
    port, text = base(material, tmp_path)
    url = f"http://127.0.0.1:{port}/kbs/v0/resource-policy"
    deny = start_kbs(tmp_path / "deny", text.replace("AuthenticatedAuthorization", "DenyAll"), port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Authorization": f"Bearer {material.admin_token()}"}) as response:
                assert response.status == 403
                assert variant(await response.json()) == "AdminAuthAccess"
    finally:
        deny.proc.stop()
    provider = f'public_key_uri = "{material.admin_public}", issuer = "trustee", audience = "kbs-admin"'
    strict = start_kbs(tmp_path / "strict", text.replace(f'public_key_uri = "file://{material.admin_public}"', provider), port)
    cases = [
        (material.admin_token(extra_claims={"aud": ["other", "kbs-admin"]}), 200),
        (material.admin_token(extra_claims={"aud": "kbs-admin"}), 200),
        (material.admin_token(), 401),
        (material.admin_token(extra_claims={"aud": "other"}), 401),
        (material.admin_token(issuer="someone-else", extra_claims={"aud": "kbs-admin"}), 401),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for token, status in cases:
                async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status == status
    finally:
        strict.proc.stop()


def _immutable(path: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    result = subprocess.run(["chattr", "+i" if on else "-i", "-R", str(path)], capture_output=True, check=False)
    return result.returncode == 0


async def test_open_admin_read_only_repository_and_header_jwk(tmp_path: Path) -> None:
    """InsecureAllowAll admin, insecure_header_jwk and extra_teekey_paths on a read-only repository."""
    from tests.kbs.helpers import make_material

    material = make_material(tmp_path / "m")
    port, text = base(material, tmp_path, extra_token='insecure_header_jwk = true\nextra_teekey_paths = ["/custom/key"]')
    text = text.replace("AuthenticatedAuthorization", "InsecureAllowAll").replace(f'trusted_certs_paths = ["{material.ca_cert}"]', "")
    repo = tmp_path / "repo"
    (repo / "ro" / "key").mkdir(parents=True)
    (repo / "ro" / "key" / "dropped").write_bytes(b"operator file")
    if not _immutable(repo, True):
        pytest.skip("cannot make a directory read-only for root here (no chattr)")
    server = start_kbs(tmp_path, text, port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.api("resource-policy"), json=policy_body(ALLOW_ALL)) as response:
                assert response.status == 200
            async with http.post(server.api("resource/ro/key/new"), data=b"x") as response:
                body = await response.json()
                assert response.status == 500 and variant(body) == "StorageError"
                assert str(repo) not in body["detail"]  # the log has the path, the client does not
            key = TeeKeyPair.generate()
            claims = ear_claims("tdx", None)
            claims["custom"] = {"key": key.public_jwk()}
            signing_key, _ = untrusted_signing()
            token = mint_token(claims, signing_key)
            async with http.get(server.api("resource/ro/key/dropped"), headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
                assert key.decrypt(await response.json()) == b"operator file"
    finally:
        server.proc.stop()
        _immutable(repo, False)
    assert "insecure_header_jwk = true" in server.proc.log.read_text()


async def test_builtin_policy_is_installed_once_and_survives_restarts(tmp_path: Path, material: Material) -> None:
    storage = f'[storage_backend]\nstorage_type = "Sqlite"\n[storage_backend.backends.sqlite]\npath = "{tmp_path / "kv.sqlite3"}"'
    port, text = base(material, tmp_path, storage=storage)
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    builtin = Path(__file__).parents[2].joinpath("kbs/policies/default.rego").read_text()
    async with aiohttp.ClientSession() as http:
        for expected, replacement in ((builtin, ALLOW_ALL), (ALLOW_ALL, None)):
            server = start_kbs(tmp_path / "kbs", text, port)
            try:
                async with http.get(server.api("resource-policy"), headers=headers) as response:
                    assert url_decode((await response.json())["policy"], "policy").decode() == expected
                if replacement is not None:
                    async with http.post(server.api("resource-policy"), headers=headers, json=policy_body(replacement)) as response:
                        assert response.status == 200
            finally:
                assert server.proc.stop() == 0


#: The built-in default before issue 9 (released to any non-sample TEE, contraindicated included).
PRE_ISSUE_9_DEFAULT = """# Built-in KBS resource policy, stored at first start (an admin policy replaces it).
#
# Releases resources to any attested TEE except the `sample` TEE, whose
# evidence is not trustworthy; the EAR status is not checked.
package policy

default allow = false

allow if {
	data.plugin == "resource"
	evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]
	not evidence.sample
}
"""


async def test_an_unchanged_superseded_default_is_upgraded_at_start(tmp_path: Path, material: Material) -> None:
    storage = f'[storage_backend]\nstorage_type = "Sqlite"\n[storage_backend.backends.sqlite]\npath = "{tmp_path / "kv.sqlite3"}"'
    port, text = base(material, tmp_path, storage=storage)
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    builtin = Path(__file__).parents[2].joinpath("kbs/policies/default.rego").read_text()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:  # servers restart on one port
        for stored, expected in ((PRE_ISSUE_9_DEFAULT, builtin), (PRE_ISSUE_9_DEFAULT + "\n", PRE_ISSUE_9_DEFAULT + "\n")):
            server = start_kbs(tmp_path / "kbs", text, port)
            try:
                async with http.post(server.api("resource-policy"), headers=headers, json=policy_body(stored)) as response:
                    assert response.status == 200
            finally:
                assert server.proc.stop() == 0
            server = start_kbs(tmp_path / "kbs", text, port)
            try:
                async with http.get(server.api("resource-policy"), headers=headers) as response:
                    assert url_decode((await response.json())["policy"], "policy").decode() == expected
            finally:
                assert server.proc.stop() == 0
        assert "replaced the stored resource policy" in server.proc.log.read_text()
