"""The `external` plugin end to end: real `rvps`, `grpc-as`, `kbs` and plugin (tests/kbs/plugin_server.py) processes.

The sample TEE guest attests and calls the plugin through the KBS at
`/kbs/v0/external/<backend>/...`; the KBS keeps the admin check and the
resource policy, the plugin decides per request which applies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from kbs.config import parse_kbs_config
from tests.kbs.helpers import (
    KbsStack,
    Material,
    admin_call,
    kbs_toml,
    policy_body,
    run_kbs_expect_exit,
    start_backend,
    start_kbs,
    tls_files,
    variant,
)
from tests.procs import Proc, free_port
from trustee_common.errors import ConfigError, PolicyDenyError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POLICY = """package policy
default allow = false
allow if {
    data.plugin == "external"
    data["resource-path"][0] == "demo"
    not data.query.name == "forbidden"
}
"""


def start_plugin(log: Path, port: int, tls: tuple[Path, Path] | None = None) -> Proc:
    args = [sys.executable, "-m", "tests.kbs.plugin_server", "--port", str(port)]
    if tls is not None:
        args += ["--tls", str(tls[0]), str(tls[1])]
    return Proc(args, log, port=port, cwd=ROOT)


def external_table(*backends: str) -> str:
    return '\n[[plugins]]\nname = "external"\nbackends = [\n' + "".join(f"  {b},\n" for b in backends) + "]\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[KbsStack]:
    root = tmp_path_factory.mktemp("external")
    backend = start_backend(root, material)
    try:
        plain_port, tls_port = free_port(), free_port()
        backend.procs.append(start_plugin(root / "plugin.log", plain_port))
        cert, key, ca_pem = tls_files(root)
        (root / "plugin-ca.pem").write_bytes(ca_pem)
        backend.procs.append(start_plugin(root / "plugin-tls.log", tls_port, (cert, key)))
        kbs = backend.start_kbs(root, material, external_table(
            f'{{ name = "demo", endpoint = "http://127.0.0.1:{plain_port}", timeout_ms = 5000 }}',
            f'{{ name = "secure", endpoint = "https://127.0.0.1:{tls_port}", ca_cert_path = "{root / "plugin-ca.pem"}" }}',
        ))
        stack = KbsStack(kbs, material)
        assert asyncio.run(call(stack, "POST", "resource-policy", role="admin", json=policy_body(POLICY)))[0] == 200
        yield stack
    finally:
        backend.stop()


async def call(stack: KbsStack, method: str, path: str, role: str | None = None, **kwargs: Any) -> tuple[int, bytes]:
    return await admin_call(stack.kbs, stack.material, method, path, role, **kwargs)


def guest(stack: KbsStack) -> KbsClient:
    return KbsClient(stack.kbs.url, evidence=AttesterEvidence(SampleAttester()))


async def test_token_gated_get_is_encrypted_to_the_tee_key(stack: KbsStack) -> None:
    async with guest(stack) as client:
        assert await client.get_resource("external/demo/secret?name=db") == b"secret for db"
        token = client.token
    async with aiohttp.ClientSession() as http, \
            http.get(stack.kbs.api("external/demo/plain"), headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200 and await response.read() == b"plain answer"


async def test_the_tls_backend_answers_through_its_ca(stack: KbsStack) -> None:
    status, body = await call(stack, "GET", "external/secure/echo", role="admin")
    assert status == 200 and json.loads(body)["path"] == ["echo"]


async def test_admin_only_post_needs_the_admin_token(stack: KbsStack) -> None:
    status, body = await call(stack, "POST", "external/demo/store", data=b"12345")
    assert (status, variant(json.loads(body))) == (401, "AdminAuthAccess")
    status, body = await call(stack, "POST", "external/demo/store", role="reader", data=b"12345")
    assert (status, variant(json.loads(body))) == (403, "AdminAuthAccess")
    assert await call(stack, "POST", "external/demo/store", role="admin", data=b"12345") == (200, b"stored 5 bytes")


async def test_the_plugin_gets_the_path_after_the_backend_name(stack: KbsStack) -> None:
    status, body = await call(stack, "PUT", "external/demo/echo/a/b?x=1", role="admin", data=b"hi")
    assert status == 200
    assert json.loads(body) == {"method": "PUT", "path": ["echo", "a", "b"], "query": {"x": "1"}, "body": "hi"}


async def test_the_resource_policy_sees_plugin_external_the_backend_name_and_the_query(stack: KbsStack) -> None:
    async with guest(stack) as client:
        with pytest.raises(PolicyDenyError):
            await client.get_resource("external/demo/secret?name=forbidden")
        with pytest.raises(PolicyDenyError):
            await client.get_resource("external/secure/secret")  # the policy allows only the backend "demo"


async def test_a_non_2xx_status_from_the_plugin_is_plugin_internal_error(stack: KbsStack) -> None:
    status, body = await call(stack, "GET", "external/demo/missing", role="admin")
    error = json.loads(body)
    assert (status, variant(error)) == (401, "PluginInternalError")
    assert error["detail"] == "external plugin backend 'demo' returned HTTP status 404: no such thing"


async def test_an_unknown_backend_is_plugin_not_found(stack: KbsStack) -> None:
    status, body = await call(stack, "GET", "external/nobody/x", role="admin")
    assert (status, variant(json.loads(body))) == (404, "PluginNotFound")


async def test_per_backend_metrics(stack: KbsStack) -> None:
    assert (await call(stack, "POST", "external/demo/store", role="admin", data=b"x"))[0] == 200
    async with aiohttp.ClientSession() as http, http.get(f"{stack.kbs.url}/metrics") as response:
        text = await response.text()
    assert 'kbs_plugin_requests_total{plugin_name="demo"}' in text
    assert 'kbs_plugin_request_duration_seconds_count{plugin_name="demo"}' in text
    assert "kbs_plugin_errors_total" in text


async def test_a_plugin_down_at_request_time_is_503_naming_it(tmp_path: Path, material: Material) -> None:
    plugin_port, port = free_port(), free_port()
    plugin = start_plugin(tmp_path / "plugin.log", plugin_port)
    text = kbs_toml(port, material, tmp_path / "repo", as_port=free_port()) + external_table(
        f'{{ name = "flaky", endpoint = "http://127.0.0.1:{plugin_port}", timeout_ms = 2000 }}')
    kbs = start_kbs(tmp_path / "kbs", text, port)
    try:
        stack = KbsStack(kbs, material)
        assert (await call(stack, "POST", "external/flaky/store", role="admin", data=b"x"))[0] == 200
        plugin.stop()
        status, body = await call(stack, "POST", "external/flaky/store", role="admin", data=b"x")
        error = json.loads(body)
        assert (status, variant(error)) == (503, "UpstreamUnavailable")
        assert error["detail"].startswith("external plugin backend 'flaky' is unavailable")
        async with aiohttp.ClientSession() as http, http.get(f"{kbs.url}/metrics") as response:
            assert 'kbs_plugin_errors_total{plugin_name="flaky"} 1.0' in await response.text()
    finally:
        assert kbs.proc.stop() == 0, kbs.proc.output()
        plugin.stop()


def test_a_plugin_down_at_start_stops_the_kbs(tmp_path: Path, material: Material) -> None:
    dead = free_port()
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port()) + external_table(
        f'{{ name = "gone", endpoint = "http://127.0.0.1:{dead}", timeout_ms = 300 }}')
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text, args=("--workers", "2"))
    assert code == 2, output
    assert output.count(f"plugins.external backend 'gone' at http://127.0.0.1:{dead} is unreachable (no connection within 0.3 s)") == 1


@pytest.mark.parametrize(("backends", "message"), [
    (['{ name = "a", endpoint = "https://127.0.0.1:1" }'], "an https:// endpoint requires ca_cert_path"),
    (['{ name = "a", endpoint = "http://127.0.0.1:1" }', '{ name = "a", endpoint = "http://127.0.0.1:2" }'],
     "backend name 'a' is used twice"),
    ([], "at least one backend is required"),
    (['{ name = "a", endpoint = "grpc://127.0.0.1:1" }'], "must start with http:// or https://"),
    (['{ name = "a", endpoint = "http://127.0.0.1:1", token = "x" }'], "unknown key(s) in config.plugins[1].backends[0]: token"),
])
def test_backend_config_rules(tmp_path: Path, material: Material, backends: list[str], message: str) -> None:
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port()) + external_table(*backends)
    with pytest.raises(ConfigError) as raised:
        parse_kbs_config(tomllib.loads(text), default_dir=tmp_path)
    assert message in raised.value.detail
