"""The `provisioner` plugin end to end: real `rvps`, `grpc-as` and `kbs` processes, and the guest's KbsClient.

The operator provisions a VM with the admin token and gets its UUID and
resource path; the guest whose init-data binds that path (`trustee.kbs.resource`)
attests on the sample TEE (init-data bound to its evidence) and fetches the
confdata TOML holding the disk key; another VM's guest cannot.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tomllib
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from tests.kbs.helpers import KbsStack, Material, admin_call, kbs_toml, policy_body, run_kbs_expect_exit, start_backend, variant
from tests.procs import free_port
from trustee_common.errors import PluginInternalError, PolicyDenyError, ResourceNotFoundError

pytestmark = pytest.mark.e2e

POLICY = """package policy
default allow = false
allow if data.plugin == "provisioner"
"""
PLUGIN = '\n[[plugins]]\nname = "provisioner"\nkey_length = 40\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[KbsStack]:
    root = tmp_path_factory.mktemp("provisioner")
    backend = start_backend(root, material)
    try:
        kbs = backend.start_kbs(root, material, PLUGIN)
        assert asyncio.run(admin_call(kbs, material, "POST", "resource-policy", json=policy_body(POLICY)))[0] == 200
        yield KbsStack(kbs, material)
    finally:
        backend.stop()


def admin(stack: KbsStack, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> Coroutine[Any, Any, tuple[int, bytes]]:
    return admin_call(stack.kbs, stack.material, method, path, role, **kwargs)


def uuid5_by_hand(name: str) -> str:
    """RFC 9562 UUIDv5 without the uuid module: SHA-1 of namespace bytes + name, version 5, variant 10."""
    digest = bytearray(hashlib.sha1(bytes.fromhex("feab5599685452bc95f00241c03e620a") + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def vm_guest(stack: KbsStack, binding: str | None) -> KbsClient:
    """A guest whose init-data names `binding` as its `trustee.kbs.resource` (none when None), bound to its sample TEE."""
    entry = "" if binding is None else f'"trustee.kbs.resource" = "{binding}"\n'
    init_data = f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n{entry}'
    attester = SampleAttester()
    attester.bind_init_data(hashlib.sha384(init_data.encode()).digest())
    return KbsClient(stack.kbs.url, evidence=AttesterEvidence(attester), init_data_toml=init_data)


async def provision(stack: KbsStack, vm_name: str, **extra: str) -> dict[str, str]:
    status, body = await admin(stack, "POST", "provisioner/provision", json={"vm_name": vm_name, **extra})
    assert status == 200, body
    answer: dict[str, str] = json.loads(body)
    return answer


async def test_a_provisioned_vm_gets_its_disk_key_and_no_other(stack: KbsStack) -> None:
    first = await provision(stack, "vm-1")
    assert first == {"uuid": uuid5_by_hand("default/vm-1"), "resource_path": f"default/{uuid5_by_hand('default/vm-1')}/root"}
    assert await provision(stack, "vm-1", namespace="default") == first  # deterministic, and the key is kept
    other = await provision(stack, "vm-1", namespace="tenant-b")
    assert other["uuid"] == uuid5_by_hand("tenant-b/vm-1") != first["uuid"]

    async with vm_guest(stack, f"kbs+provisioner:///{first['resource_path']}") as guest:
        text = (await guest.get_resource(f"provisioner/{first['resource_path']}")).decode()
        again = (await guest.get_resource(f"provisioner/{first['resource_path']}")).decode()
        assert text == again
        assert re.fullmatch(r'version = "0\.1\.0"\n\n\[data\]\n"io\.cryptsetup\.key\.text\.root" = "[A-Za-z0-9]{40}"\n', text), text
        assert len(tomllib.loads(text)["data"]["io.cryptsetup.key.text.root"]) == 40
        # Bound to vm-1: tenant-b's vm-1 is refused, whatever the policy says.
        with pytest.raises(PluginInternalError, match="init-data resource mismatch"):
            await guest.get_resource(f"provisioner/{other['resource_path']}")

    async with vm_guest(stack, None) as unbound:
        with pytest.raises(PluginInternalError, match=r"has no trustee\.kbs\.resource"):
            await unbound.get_resource(f"provisioner/{first['resource_path']}")


async def test_deprovision_removes_the_key(stack: KbsStack) -> None:
    vm = await provision(stack, "vm-gone")
    assert await admin(stack, "DELETE", f"provisioner/provision/{vm['uuid']}") == (200, b'{"status":"deleted"}')
    assert await admin(stack, "DELETE", f"provisioner/provision/{vm['uuid']}") == (200, b'{"status":"deleted"}')
    async with vm_guest(stack, f"kbs+provisioner:///{vm['resource_path']}") as guest:
        with pytest.raises(ResourceNotFoundError):
            await guest.get_resource(f"provisioner/{vm['resource_path']}")
    again = await provision(stack, "vm-gone")  # a new key under the same UUID
    assert again == vm


async def test_operator_calls_need_the_admin_token(stack: KbsStack) -> None:
    status, body = await admin(stack, "POST", "provisioner/provision", role=None, json={"vm_name": "anon"})
    assert (status, variant(json.loads(body))) == (401, "AdminAuthAccess")
    status, body = await admin(stack, "DELETE", f"provisioner/provision/{uuid.uuid4()}", role="reader")
    assert (status, variant(json.loads(body))) == (403, "AdminAuthAccess")
    async with aiohttp.ClientSession() as http, http.get(stack.kbs.api(f"provisioner/default/{uuid.uuid4()}/root")) as response:
        assert (response.status, variant(await response.json())) == (401, "TokenNotFound")


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"not json", "must be JSON"), (b"[]", "must be a JSON object"), (b"{}", "vm_name must be a non-empty string"),
     (b'{"vm_name": "a/b"}', "without '/'"), (b'{"vm_name": "a", "namespace": 7}', "namespace must be"),
     (b'{"vm_name": "' + b"x" * 254 + b'"}', "at most 253 bytes")],
)
async def test_bad_provision_requests_get_a_clear_400(stack: KbsStack, body: bytes, message: str) -> None:
    status, answer = await admin(stack, "POST", "provisioner/provision", data=body)
    assert (status, variant(json.loads(answer))) == (400, "MalformedRequest")
    assert message in json.loads(answer)["detail"]


async def test_other_methods_and_paths_are_refused(stack: KbsStack) -> None:
    status, body = await admin(stack, "PUT", "provisioner/provision", json={"vm_name": "x"})
    assert (status, variant(json.loads(body))) == (405, "MethodNotAllowed")
    status, body = await admin(stack, "POST", "provisioner/other", json={"vm_name": "x"})
    assert (status, variant(json.loads(body))) == (404, "InvalidRequestPath")
    status, body = await admin(stack, "DELETE", "provisioner/provision/not-a-uuid")
    assert (status, variant(json.loads(body))) == (400, "MalformedRequest")


async def test_the_resource_policy_gates_the_release(stack: KbsStack) -> None:
    vm = await provision(stack, "vm-policy")
    deny = POLICY.replace('data.plugin == "provisioner"', 'data.plugin == "resource"')
    assert (await admin(stack, "POST", "resource-policy", json=policy_body(deny)))[0] == 200
    try:
        async with vm_guest(stack, f"kbs+provisioner:///{vm['resource_path']}") as guest:
            with pytest.raises(PolicyDenyError):
                await guest.get_resource(f"provisioner/{vm['resource_path']}")
    finally:
        assert (await admin(stack, "POST", "resource-policy", json=policy_body(POLICY)))[0] == 200


@pytest.mark.parametrize(("table", "message"), [("key_length = 8", "key_length must be >= 16"),
                                                 ("key_length = 4096", "key_length must be <= 1024"),
                                                 ("length = 32", "unknown key(s) in config.plugins[1]: length")])
def test_bad_plugin_config_stops_the_start(tmp_path: Path, material: Material, table: str, message: str) -> None:
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port()) + f'\n[[plugins]]\nname = "provisioner"\n{table}\n'
    code, output = run_kbs_expect_exit(tmp_path / "kbs", text)
    assert code == 2 and message in output, output
