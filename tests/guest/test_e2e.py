"""Guest end to end: real rvps + grpc-as + kbs, and real AA + CDH + REST server.

One stack per module. The KBS gets an allow policy and a secret through its
admin API; then the guest side fetches it through the REST server, the CDH
and the AA exactly as a workload would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
import yarl

from tests.guest.guestprocs import GuestProc, aa_stub, guest_env, start_aa, start_cdh, start_rest
from tests.guest.serverstack import ALLOW_POLICY, DENY_POLICY, ServerStack
from tests.procs import Proc, free_port
from trustee_common.jose import TeeKeyPair
from trustee_pb import attestation_agent_pb2 as pb

pytestmark = pytest.mark.e2e

SECRET = b"the secret \x00\x01\xfe\xff bytes"
INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"policy.rego" = "package agent_policy"\n'


@dataclass
class Stack:
    server: ServerStack
    aa: GuestProc
    aa_rsa: GuestProc
    cdh: GuestProc
    rest: GuestProc
    rest_kbs_down: GuestProc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("guest-e2e")
    server = ServerStack(tmp / "server")
    guests: list[GuestProc] = []
    try:
        aa = start_aa(tmp, env=guest_env(AA_KBC_PARAMS=f"cc_kbc::{server.url}"))
        guests.append(aa)
        (tmp / "aa-rsa.toml").write_text(f'[token_configs.kbs]\nurl = "{server.url}"\ntee_key_algorithm = "RSA-OAEP-256"\n')
        (tmp / "initdata.toml").write_text(INIT_DATA)
        guests.append(aa_rsa := start_aa(tmp, "-c", str(tmp / "aa-rsa.toml"), "-t", str(tmp / "initdata.toml"), name="aa-rsa"))
        cdh_config = f'[kbc]\nname = "cc_kbc"\nurl = "{server.url}"\n[aa]\naa_socket = "{aa.addr}"\n'
        guests.append(cdh := start_cdh(tmp, cdh_config))
        guests.append(rest := start_rest(tmp, aa.addr, cdh.addr))
        down_config = f'[kbc]\nname = "cc_kbc"\nurl = "http://127.0.0.1:{free_port()}"\n[aa]\naa_socket = "{aa.addr}"\n'
        guests.append(cdh_down := start_cdh(tmp, down_config, name="cdh-kbs-down"))
        guests.append(rest_down := start_rest(tmp, aa.addr, cdh_down.addr, "resource", name="rest-kbs-down"))
        yield Stack(server, aa, aa_rsa, cdh, rest, rest_down)
    finally:
        for proc in reversed(guests):
            proc.stop()
        server.stop()


@pytest.fixture(scope="module")
def provisioned(stack: Stack) -> Stack:
    async def provision() -> None:
        await stack.server.set_policy(ALLOW_POLICY)
        await stack.server.set_resource("default/test/secret", SECRET)

    asyncio.run(provision())
    return stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def rest_get(http: aiohttp.ClientSession, proc: GuestProc, path: str) -> tuple[int, bytes]:
    async with http.get(yarl.URL(f"http://127.0.0.1:{proc.port}{path}", encoded=True)) as response:
        return response.status, await response.read()


def jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def token_tee_pubkey(token: str) -> dict[str, str]:
    claims = jwt_claims(token)
    submods = claims["submods"]
    assert isinstance(submods, dict)
    pubkey: dict[str, str] = submods["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"]
    return pubkey


async def get_token(proc: GuestProc, token_type: str = "kbs") -> bytes:  # noqa: S107
    async with grpc.aio.insecure_channel(proc.addr) as channel:
        reply = await aa_stub(channel).GetToken(pb.GetTokenRequest(TokenType=token_type))
        return bytes(reply.Token)


def count(proc: GuestProc | Proc, line: str) -> int:
    return proc.output().count(line)


async def kbs_attestations(http: aiohttp.ClientSession, kbs_url: str) -> float:
    """`kbs_attestation_requests_total` (the KBS has no per-request log line: its access log is off by default)."""
    async with http.get(f"{kbs_url}/metrics") as response:
        text = await response.text()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("kbs_attestation_requests_total "))


async def test_get_evidence_returns_sample_evidence(provisioned: Stack) -> None:
    async with grpc.aio.insecure_channel(provisioned.aa.addr) as channel:
        reply = await aa_stub(channel).GetEvidence(pb.GetEvidenceRequest(RuntimeData=b"\x07" * 48))
    assert json.loads(reply.Evidence) == {"svn": "1", "report_data": base64.b64encode(b"\x07" * 48).decode()}


async def test_get_token_binds_the_returned_key_pair(provisioned: Stack) -> None:
    reply = json.loads(await get_token(provisioned.aa))
    assert set(reply) == {"token", "tee_keypair"}
    assert reply["tee_keypair"].startswith("-----BEGIN PRIVATE KEY-----")
    key_pair = TeeKeyPair.from_pem(reply["tee_keypair"].encode())
    assert token_tee_pubkey(reply["token"]) == key_pair.public_jwk()
    assert "exp" in jwt_claims(reply["token"])
    # Every GetToken is a new attestation with a new key (upstream AA semantics).
    second = json.loads(await get_token(provisioned.aa))
    assert second["tee_keypair"] != reply["tee_keypair"]


async def test_get_token_with_rsa_key_and_init_data(provisioned: Stack) -> None:
    reply = json.loads(await get_token(provisioned.aa_rsa))
    assert reply["tee_keypair"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    pubkey = token_tee_pubkey(reply["token"])
    assert pubkey["kty"] == "RSA" and pubkey["alg"] == "RSA-OAEP-256"
    assert pubkey == TeeKeyPair.from_pem(reply["tee_keypair"].encode()).public_jwk()


async def test_get_token_unknown_type_is_invalid_argument(provisioned: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_token(provisioned.aa, "kbs2")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_resource_through_rest_and_cached_token(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    path = "/cdh/resource/default/test/secret"
    new_tokens = count(provisioned.cdh, "obtained a new KBS token")
    assert await rest_get(http, provisioned.rest, path) == (200, SECRET)
    assert count(provisioned.cdh, "obtained a new KBS token") - new_tokens <= 1
    tokens_issued = count(provisioned.aa, "issued a kbs token")
    attestations = await kbs_attestations(http, provisioned.server.url)
    assert tokens_issued > 0 and attestations > 0
    assert await rest_get(http, provisioned.rest, path) == (200, SECRET)
    assert await rest_get(http, provisioned.rest, path) == (200, SECRET)
    # The CDH reused its cached token: no new AA token, no new attestation at the KBS.
    assert count(provisioned.aa, "issued a kbs token") == tokens_issued
    assert await kbs_attestations(http, provisioned.server.url) == attestations
    assert count(provisioned.cdh, "released resource kbs:///default/test/secret") >= 3


def test_curl_fetches_the_secret(provisioned: Stack) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    url = f"http://127.0.0.1:{provisioned.rest.port}/cdh/resource/default/test/secret"
    result = subprocess.run([curl, "-sS", "--fail", url], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECRET


async def test_missing_resource_is_404(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    status, body = await rest_get(http, provisioned.rest, "/cdh/resource/default/test/absent")
    assert status == 404 and b"not found" in body


async def test_policy_deny_is_403_after_one_fresh_attestation(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    path = "/cdh/resource/default/test/secret"
    assert (await rest_get(http, provisioned.rest, path))[0] == 200
    tokens_issued = count(provisioned.aa, "issued a kbs token")
    await provisioned.server.set_policy(DENY_POLICY)
    try:
        status, body = await rest_get(http, provisioned.rest, path)
    finally:
        await provisioned.server.set_policy(ALLOW_POLICY)
    assert status == 403 and b"denied" in body.lower()
    # The cached token was refused, so the CDH attested once more, and stopped there.
    assert count(provisioned.aa, "issued a kbs token") == tokens_issued + 1
    assert "KBS rejected the cached token (PolicyDeny)" in provisioned.cdh.output()
    assert await rest_get(http, provisioned.rest, path) == (200, SECRET)


async def test_stale_cached_token_is_replaced_by_one_fresh_attestation(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    """A reference-value change makes the CDH's cached token stale (401 StaleAttestation): it attests again, once."""
    path = "/cdh/resource/default/test/secret"
    assert (await rest_get(http, provisioned.rest, path))[0] == 200
    payload = base64.b64encode(json.dumps({"unrelated_value": ["x"]}).encode()).decode()
    status, text = await provisioned.server.admin_post("reference-value", json={"version": "0.1.0", "type": "sample", "payload": payload})
    assert status == 200, text
    stale_line = "KBS rejected the cached token (StaleAttestation)"
    before = count(provisioned.cdh, stale_line)
    deadline = asyncio.get_running_loop().time() + 30.0  # the KBS notices within appraisal_epoch_ttl_seconds (1 s)
    while count(provisioned.cdh, stale_line) == before:
        assert asyncio.get_running_loop().time() < deadline, "the cached token was never refused as stale"
        assert await rest_get(http, provisioned.rest, path) == (200, SECRET)
        await asyncio.sleep(0.1)
    assert await rest_get(http, provisioned.rest, path) == (200, SECRET)


async def test_kbs_unreachable_from_cdh_is_502(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    status, body = await rest_get(http, provisioned.rest_kbs_down, "/cdh/resource/default/test/secret")
    assert status == 502 and b"cannot reach the KBS" in body


async def test_rest_token_evidence_and_info(provisioned: Stack, http: aiohttp.ClientSession) -> None:
    status, body = await rest_get(http, provisioned.rest, "/aa/token?token_type=kbs")
    assert status == 200
    reply = json.loads(body)
    assert token_tee_pubkey(reply["token"]) == TeeKeyPair.from_pem(reply["tee_keypair"].encode()).public_jwk()
    status, body = await rest_get(http, provisioned.rest, "/aa/evidence?runtime_data=bm9uY2U&encoding=base64")
    assert status == 200 and json.loads(body) == {"svn": "1", "report_data": base64.b64encode(b"nonce").decode()}
    status, body = await rest_get(http, provisioned.rest, "/info")
    assert status == 200 and json.loads(body)["tee"] == "sample"
    assert (await rest_get(http, provisioned.rest, "/aa/token"))[0] == 400
    assert (await rest_get(http, provisioned.rest, "/cdh/resource/default/%2e%2e/secret"))[0] == 400
    # A path the KBS refuses (not repo/type/tag) comes back as 400 through CDH and REST.
    status, body = await rest_get(http, provisioned.rest, "/cdh/resource/default/test/secret/extra")
    assert status == 400


def test_no_secret_or_token_in_guest_logs(provisioned: Stack) -> None:
    for proc in (provisioned.aa, provisioned.aa_rsa, provisioned.cdh, provisioned.rest):
        text = proc.output()
        assert "the secret" not in text
        assert "eyJ" not in text
        assert "PRIVATE KEY" not in text
