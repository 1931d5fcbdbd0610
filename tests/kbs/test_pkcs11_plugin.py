"""The `pkcs11` plugin end to end: real `rvps`, `grpc-as` and `kbs` processes over a SoftHSM 2 token.

Each module run makes a token in a private SOFTHSM2_CONF directory
(`softhsm2-util --init-token`) and an RSA key pair in it (labelled for
`wrap-key`, made with python-pkcs11 in a child process), then starts the
KBS with the plugin. The sample TEE guest attests and reads resources the
admin stored through the KBS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from tests.kbs.helpers import Kbs, Material, admin_call, kbs_toml, policy_body, run_kbs_expect_exit, start_backend, start_kbs, variant
from tests.procs import free_port
from trustee_common.errors import PolicyDenyError, ResourceNotFoundError

MODULE = next((p for p in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so") if Path(p).exists()),
              None)
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(MODULE is None or shutil.which("softhsm2-util") is None, reason="softhsm2 is not installed")]

PIN = "4711"
LABEL = "kbs-wrap"
POLICY = """package policy
default allow = false
allow if {
    data.plugin == "pkcs11"
    not startswith(data["resource-path"], "resource/secret/")
}
"""
KEYGEN = """
import pkcs11, sys
from pkcs11 import KeyType
token = pkcs11.lib(sys.argv[1]).get_slots(token_present=True)[0].get_token()
with token.open(rw=True, user_pin=sys.argv[2]) as session:
    session.generate_keypair(KeyType.RSA, 2048, label=sys.argv[3], store=True)
"""


@dataclass
class Hsm:
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def make_token(root: Path) -> Hsm:
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kbs", "--pin", PIN, "--so-pin", "12345678"],
                   env=env, check=True, capture_output=True, timeout=60)
    assert MODULE is not None
    subprocess.run([sys.executable, "-c", KEYGEN, MODULE, PIN, LABEL], env=env, check=True, capture_output=True, timeout=60)
    return Hsm(conf)


def pkcs11_table(*, module: str | None = None, pin: str = f'pin = "{PIN}"') -> str:
    return f"""
[[plugins]]
name = "pkcs11"
module = "{module or MODULE}"
{pin}
rsa_mechanism = "RsaPkcsTest"
lookup_label = "{LABEL}"
"""


@dataclass
class Stack:
    kbs: Kbs
    material: Material
    hsm: Hsm
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("pkcs11")
    hsm = make_token(root / "hsm")
    backend = start_backend(root, material)
    try:
        kbs = backend.start_kbs(root, material, pkcs11_table(pin='pin_env = "KBS_HSM_PIN"'), env={**hsm.env, "KBS_HSM_PIN": PIN})
        stack = Stack(kbs, material, hsm, root)
        assert asyncio.run(admin(stack, "POST", "resource-policy", json=policy_body(POLICY)))[0] == 200
        yield stack
    finally:
        backend.stop()


async def admin(stack: Stack, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> tuple[int, bytes]:
    return await admin_call(stack.kbs, stack.material, method, path, role, **kwargs)


def guest(stack: Stack) -> KbsClient:
    return KbsClient(stack.kbs.url, evidence=AttesterEvidence(SampleAttester()))


async def test_admin_stores_a_resource_in_the_hsm_and_the_attested_guest_reads_it(stack: Stack) -> None:
    assert await admin(stack, "POST", "pkcs11/resource/app/key/one", data=b"hsm secret") == (200, b"")
    async with guest(stack) as client:
        assert await client.get_resource("pkcs11/resource/app/key/one") == b"hsm secret"
    assert await admin(stack, "POST", "pkcs11/resource/app/key/one", data=b"second value") == (200, b"")
    async with guest(stack) as client:
        assert await client.get_resource("pkcs11/resource/app/key/one") == b"second value"


async def test_writes_and_deletes_need_the_admin_token(stack: Stack) -> None:
    status, body = await admin(stack, "POST", "pkcs11/resource/app/key/anon", role=None, data=b"x")
    assert (status, variant(json.loads(body))) == (401, "AdminAuthAccess")
    status, body = await admin(stack, "DELETE", "pkcs11/resource/app/key/one", role="reader")
    assert (status, variant(json.loads(body))) == (403, "AdminAuthAccess")


async def test_delete_removes_the_object(stack: Stack) -> None:
    assert (await admin(stack, "POST", "pkcs11/resource/app/key/gone", data=b"bye"))[0] == 200
    assert await admin(stack, "DELETE", "pkcs11/resource/app/key/gone") == (200, b"")
    status, body = await admin(stack, "DELETE", "pkcs11/resource/app/key/gone")
    assert (status, variant(json.loads(body))) == (404, "ResourceNotFound")
    async with guest(stack) as client:
        with pytest.raises(ResourceNotFoundError, match="resource app/key/gone not found"):
            await client.get_resource("pkcs11/resource/app/key/gone")


async def test_the_resource_policy_gates_reads_with_data_plugin_pkcs11(stack: Stack) -> None:
    assert (await admin(stack, "POST", "pkcs11/resource/secret/key/one", data=b"never"))[0] == 200
    async with guest(stack) as client:
        with pytest.raises(PolicyDenyError):
            await client.get_resource("pkcs11/resource/secret/key/one")
        # The same policy does not open the resource plugin (its data.plugin is "resource").
        assert (await admin(stack, "POST", "resource/app/key/one", data=b"plain"))[0] == 200
        with pytest.raises(PolicyDenyError):
            await client.get_resource("resource/app/key/one")


async def test_a_read_without_a_token_is_refused(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(stack.kbs.api("pkcs11/resource/app/key/one")) as response:
        assert (response.status, variant(await response.json())) == (401, "TokenNotFound")


async def test_wrap_key_round_trip_through_the_hsm_key_pair(stack: Stack) -> None:
    status, wrapped = await admin(stack, "POST", "pkcs11/wrap-key", data=b"data key")
    assert status == 200 and len(wrapped) == 256 and b"data key" not in wrapped
    async with guest(stack) as client:
        await client.attest()
        token, key = client.token, client.key_pair
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(stack.kbs.api("pkcs11/wrap-key"), headers=headers, data=wrapped) as response:
        assert response.status == 200 and response.content_type == "application/json"
        assert key.decrypt(await response.json()) == b"data key"


async def test_other_methods_and_paths_are_refused(stack: Stack) -> None:
    status, body = await admin(stack, "PUT", "pkcs11/resource/app/key/one", data=b"x")
    assert (status, variant(json.loads(body))) == (405, "MethodNotAllowed")
    status, body = await admin(stack, "POST", "pkcs11/other/thing", data=b"x")
    assert (status, variant(json.loads(body))) == (404, "InvalidRequestPath")


async def test_resources_are_token_objects_another_kbs_on_the_token_sees(stack: Stack, tmp_path: Path) -> None:
    """Upstream makes session objects, gone with its session; ours persist in the token."""
    assert (await admin(stack, "POST", "pkcs11/resource/app/key/kept", data=b"kept"))[0] == 200
    port = free_port()
    text = kbs_toml(port, stack.material, tmp_path / "repo", as_port=free_port()) + pkcs11_table()
    second = start_kbs(tmp_path / "kbs", text, port, env=stack.hsm.env)
    try:
        stack2 = Stack(second, stack.material, stack.hsm, tmp_path)
        assert await admin(stack2, "DELETE", "pkcs11/resource/app/key/kept") == (200, b"")
    finally:
        assert second.proc.stop() == 0, second.proc.output()  # the HSM session is closed cleanly at SIGTERM


def test_a_module_that_does_not_load_stops_the_start(tmp_path: Path, material: Material) -> None:
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port()) + pkcs11_table(module="/nonexistent/libnone.so")
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text)
    assert code == 2, output
    assert "plugins.pkcs11.module: cannot load the PKCS#11 module /nonexistent/libnone.so" in output


def test_a_wrong_pin_stops_the_start_without_showing_it(stack: Stack, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("99999999\n")
    text = kbs_toml(free_port(), stack.material, tmp_path / "repo", as_port=free_port()) + pkcs11_table(pin=f'pin_file = "{pin_file}"')
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text, args=("--workers", "2"), env=stack.hsm.env)
    assert code == 2, output
    # Tried once, by the supervisor, not once per worker (an HSM locks the PIN after a few wrong tries).
    assert output.count("plugins.pkcs11: the token 'kbs' refused the user PIN (PinIncorrect)") == 1, output
    assert "99999999" not in output
