"""Resource policy under hostile input, against a real `kbs` process (issue 9, item 4).

* Query strings and resource paths are evaluation data: 200 distinct query
  strings compile the policy no more times and leave the memory flat.
* An evaluation that runs too long answers 503 `PolicyEngineUnavailable`
  within the configured bound while /healthz and other requests are served.
* Built-ins that reach the environment or the network are refused at
  upload, whatever the spelling, so a canary variable in the KBS's
  environment cannot be reached.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kbs.helpers import Kbs, Material, ear_claims, kbs_toml, load_signing, mint_token, policy_body, variant
from tests.procs import Proc, free_port, script
from trustee_common.jose import TeeKeyPair

CANARY = "canary-7f3a9c-do-not-leak"
TIMEOUT = 1.0
#: numbers.range over 10^8 takes many minutes in rego-cpp; only the "slow/..." path reaches it.
SLOW_AND_FAST = """package policy
import rego.v1
default allow := false
allow if { data.plugin == "resource"; data["resource-path"] != "slow/a/b" }
allow if { data["resource-path"] == "slow/a/b"; count([y | y := numbers.range(1, 100000000)[_]]) > 0 }
"""


def big_policy(rules: int = 300) -> str:
    """~30 KB of rules: compiling it is costly, evaluating it is cheap."""
    body = "\n".join(
        f'r{n} if {{ input.submods.cpu0["ear.status"] == "s{n}"; startswith(data["resource-path"], "p{n}/"); data.query.q != "{n}" }}'
        for n in range(rules)
    )
    return f'package policy\nimport rego.v1\ndefault allow := false\n{body}\nallow if {{ data.plugin == "resource"; not r1 }}\n'


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    directory = tmp_path_factory.mktemp("kbs-limits")
    port = free_port()
    text = kbs_toml(port, material, directory / "repo", as_port=free_port()) + (
        f"\n[policy_engine]\nevaluation_timeout = {TIMEOUT}\nworkers = 2\n"
    )
    config = directory / "kbs.toml"
    config.write_text(text)
    proc = Proc([script("kbs"), "--config-file", str(config)], directory / "kbs.log", port=port, env={"TRUSTEE_CANARY": CANARY})
    yield Kbs(proc, port, directory / "repo", config)
    proc.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def admin(http: aiohttp.ClientSession, kbs: Kbs, material: Material, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    async with http.post(kbs.api(path), headers=headers, **kwargs) as response:
        return response.status, await response.text()


async def fetch(http: aiohttp.ClientSession, kbs: Kbs, path: str, token: str) -> tuple[int, Any]:
    async with http.get(kbs.api(path), headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


def token(material: Material) -> str:
    signing_key, chain = load_signing(material)
    return mint_token(ear_claims("tdx", TeeKeyPair.generate().public_jwk()), signing_key, chain=chain)


def tree_rss_kib(pid: int) -> int:
    """RSS of the process and its direct children (the policy workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{each}/status").read_text())
        total += int(found.group(1)) if found else 0
    return total


async def metric(http: aiohttp.ClientSession, kbs: Kbs, name: str) -> float:
    async with http.get(f"{kbs.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


async def test_distinct_query_strings_compile_nothing_and_keep_memory_flat(
    client: aiohttp.ClientSession, limited: Kbs, material: Material
) -> None:
    text = big_policy()
    assert len(text) > 25_000
    assert (await admin(client, limited, material, "resource-policy", json=policy_body(text)))[0] == 200
    assert (await admin(client, limited, material, "resource/big/key/one", data=b"v"))[0] == 200
    bearer = token(material)
    for n in range(10):  # warm up: every worker compiles the policy once
        assert (await fetch(client, limited, f"resource/big/key/one?warm={n}", bearer))[0] == 200
    compiled = await metric(client, limited, "kbs_policy_compilations")
    rss_before = tree_rss_kib(limited.proc.popen.pid)
    for n in range(200):
        status, body = await fetch(client, limited, f"resource/big/key/one?q=x{n}&n{n}={n}", bearer)
        assert status == 200, body
    assert await metric(client, limited, "kbs_policy_compilations") == compiled
    growth_mib = (tree_rss_kib(limited.proc.popen.pid) - rss_before) / 1024
    assert growth_mib < 100, f"KBS and its policy workers grew by {growth_mib:.0f} MiB over 200 query strings"


async def test_overrunning_policy_answers_503_and_others_are_served(
    client: aiohttp.ClientSession, limited: Kbs, material: Material
) -> None:
    assert (await admin(client, limited, material, "resource-policy", json=policy_body(SLOW_AND_FAST)))[0] == 200
    assert (await admin(client, limited, material, "resource/fast/a/b", data=b"fast"))[0] == 200
    bearer = token(material)
    started = time.monotonic()
    slow = asyncio.create_task(fetch(client, limited, "resource/slow/a/b", bearer))
    await asyncio.sleep(0.3)
    while not slow.done():
        tick = time.monotonic()
        async with client.get(f"{limited.url}/healthz") as response:
            assert response.status == 200
        assert (await fetch(client, limited, "resource/fast/a/b", bearer))[0] == 200
        assert time.monotonic() - tick < 10, "the KBS stalled while a policy evaluation was running"
        await asyncio.sleep(0.1)
    status, body = await slow
    assert (status, variant(body)) == (503, "PolicyEngineUnavailable")
    assert "exceeded" in body["detail"]
    assert time.monotonic() - started < TIMEOUT + 20
    assert await metric(client, limited, "kbs_policy_workers_replaced") >= 1
    deadline = time.monotonic() + 60
    while (await fetch(client, limited, "resource/fast/a/b", bearer))[0] != 200:  # a replacement worker serves
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


ENV_READERS = [
    'allow if { opa.runtime().env.TRUSTEE_CANARY == "x" }',
    'allow if { opa["runtime"]().env.TRUSTEE_CANARY }',
    "allow if { f(1) }\nf(x) := opa.runtime() if x",
    "allow if { v := time.now_ns() with time.now_ns as opa.runtime; v.env }",
    'allow if { http.send({"method": "get", "url": "http://127.0.0.1:9"}) }',
    'allow if { net.lookup_ip_addr("localhost") }',
]


@pytest.mark.parametrize("rule", ENV_READERS)
async def test_policies_reaching_the_environment_or_network_are_refused(
    client: aiohttp.ClientSession, limited: Kbs, material: Material, rule: str
) -> None:
    text = f"package policy\nimport rego.v1\ndefault allow := false\n{rule}\n"
    status, body = await admin(client, limited, material, "resource-policy", json=policy_body(text))
    assert status == 400, body
    assert "PolicyEngineError" in body and "disabled" in body
    assert CANARY not in body
    async with client.get(limited.api("resource-policy"), headers={"Authorization": f"Bearer {material.admin_token()}"}) as r:
        assert "runtime" not in await r.text()  # the refused policy was not stored


async def test_a_policy_that_aborts_the_engine_is_refused_and_the_kbs_lives_on(
    client: aiohttp.ClientSession, limited: Kbs, material: Material
) -> None:
    text = 'package policy\nimport rego.v1\nallow if { data.policy.z with input as {"x": 2} }\nz := 1 / input.x\n'
    status, body = await admin(client, limited, material, "resource-policy", json=policy_body(text))
    assert (status, "PolicyEngineError" in body, "abort" in body) == (400, True, True), body
    async with client.get(f"{limited.url}/healthz") as response:
        assert response.status == 200
    assert limited.proc.popen.poll() is None
