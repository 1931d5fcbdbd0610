"""End to end: real `rvps`, `grpc-as` and `kbs` processes and the sample TEE guest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from guest.attesters.sample import SampleAttester, SampleDeviceAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from tests.kbs.helpers import (
    ALLOW_ALL,
    Kbs,
    Material,
    ear_claims,
    kbs_toml,
    mint_token,
    policy_body,
    start_backend,
    start_kbs,
    untrusted_signing,
    variant,
)
from tests.procs import free_port
from trustee_common.b64 import std_encode, url_decode, url_encode
from trustee_common.canonical import HashAlgorithm
from trustee_common.errors import MalformedRequestError, PolicyDenyError
from trustee_common.jose import KEY_ALGORITHMS, TeeKeyPair

pytestmark = pytest.mark.e2e

SAMPLE_REQUEST = {"version": "0.4.0", "tee": "sample", "extra-params": ""}


@dataclass
class Stack:
    kbs: Kbs
    short: Kbs
    material: Material



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    backend = start_backend(root, material)
    procs, as_port = backend.procs, backend.as_port  # the KBS processes are added: stop() ends them all
    try:
        port, short_port = free_port(), free_port()
        kbs = start_kbs(root / "kbs", kbs_toml(port, material, root / "kbs" / "repo", as_port=as_port), port)
        procs.append(kbs.proc)
        short_text = kbs_toml(short_port, material, root / "short" / "repo", as_port=as_port, timeout_minutes=0.04)
        short = start_kbs(root / "short", short_text, short_port)
        procs.append(short.proc)
        yield Stack(kbs, short, material)
    finally:
        backend.stop()


async def admin(kbs: Kbs, material: Material, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    async with aiohttp.ClientSession() as http, http.request(method, kbs.api(path), headers=headers, **kwargs) as response:
        text = await response.read()
        return response.status, json.loads(text) if text else None


async def prepare(kbs: Kbs, material: Material, path: str, data: bytes, policy: str = ALLOW_ALL) -> None:
    assert (await admin(kbs, material, "POST", "resource-policy", json=policy_body(policy)))[0] == 200
    assert (await admin(kbs, material, "POST", f"resource/{path}", data=data))[0] == 200


def guest(kbs: Kbs, key: TeeKeyPair | None = None) -> KbsClient:
    return KbsClient(kbs.url, evidence=AttesterEvidence(SampleAttester()), key_pair=key)


async def test_sample_flow_with_cookie_then_passport(stack: Stack) -> None:
    await prepare(stack.kbs, stack.material, "e2e/key/one", b"top secret")
    async with guest(stack.kbs) as client:
        assert await client.get_resource("resource/e2e/key/one") == b"top secret"
        token, key = client.token, client.key_pair
    assert token is not None
    claims = json.loads(url_decode(token.split(".")[1], "payload"))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert "sample" in evidence and evidence["runtime_data_claims"]["tee-pubkey"] == key.public_jwk()
    async with KbsClient(stack.kbs.url, token=token, key_pair=key) as passport:
        assert await passport.get_resource("resource/e2e/key/one") == b"top secret"


@pytest.mark.parametrize("algorithm", [*KEY_ALGORITHMS, "RSA1_5"])
async def test_attested_release_for_each_tee_key_type(stack: Stack, algorithm: str) -> None:
    await prepare(stack.kbs, stack.material, "e2e/jwe/key", algorithm.encode())
    async with guest(stack.kbs, TeeKeyPair.generate(algorithm)) as client:
        assert await client.get_resource("resource/e2e/jwe/key") == algorithm.encode()


async def test_default_policy_denies_the_sample_tee(stack: Stack) -> None:
    default = Path(__file__).parents[2].joinpath("kbs/policies/default.rego").read_text()
    await prepare(stack.kbs, stack.material, "e2e/key/denied", b"x", policy=default)
    async with guest(stack.kbs) as client:
        with pytest.raises(PolicyDenyError):
            await client.get_resource("resource/e2e/key/denied")


async def _auth(http: aiohttp.ClientSession, kbs: Kbs) -> str:
    async with http.post(kbs.api("auth"), json=SAMPLE_REQUEST) as response:
        assert response.status == 200
        return str((await response.json())["nonce"])


def _attestation(nonce: str, key: TeeKeyPair, *, bound_nonce: str | None = None, bound_key: TeeKeyPair | None = None) -> dict[str, Any]:
    """Evidence bound to `bound_nonce`/`bound_key` (default: the ones sent)."""
    evidence = AttesterEvidence(SampleAttester())
    bound = evidence.composite(bound_nonce or nonce, (bound_key or key).public_jwk(), HashAlgorithm.SHA384)
    return {"runtime-data": {"nonce": nonce, "tee-pubkey": key.public_jwk()}, "tee-evidence": bound}


async def _attest(http: aiohttp.ClientSession, kbs: Kbs, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(kbs.api("attest"), json=body) as response:
        return response.status, await response.json(content_type=None)


async def test_nonce_is_usable_once_even_concurrently(stack: Stack) -> None:
    key = TeeKeyPair.generate()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        nonce = await _auth(http, stack.kbs)
        body = _attestation(nonce, key)
        results = await asyncio.gather(*(_attest(http, stack.kbs, body) for _ in range(4)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 401, 401, 401], results
        assert all(variant(reply) == "AttestationError" for status, reply in results if status == 401)
        status, reply = await _attest(http, stack.kbs, body)
        assert (status, variant(reply)) == (401, "AttestationError")


async def test_evidence_bound_to_other_nonce_or_key_is_rejected(stack: Stack) -> None:
    key, other = TeeKeyPair.generate(), TeeKeyPair.generate()
    for kwargs in ({"bound_nonce": std_encode(b"\x00" * 32)}, {"bound_key": other}):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            nonce = await _auth(http, stack.kbs)
            status, reply = await _attest(http, stack.kbs, _attestation(nonce, key, **kwargs))
            assert (status, variant(reply)) == (401, "AttestationError"), kwargs


async def test_cookie_session_expires(stack: Stack) -> None:
    await prepare(stack.short, stack.material, "short/key/a", b"short-lived")
    key = TeeKeyPair.generate()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        nonce = await _auth(http, stack.short)
        assert (await _attest(http, stack.short, _attestation(nonce, key)))[0] == 200
        cookie = next(f"{c.key}={c.value}" for c in http.cookie_jar if c.key == "kbs-session-id")
    # Sent by hand from a jar-less client: an expiring jar would drop the cookie itself.
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.short.api("resource/short/key/a"), headers={"Cookie": cookie}) as response:
            assert response.status == 200
            assert key.decrypt(await response.json()) == b"short-lived"
        await asyncio.sleep(2.6)
        async with http.get(stack.short.api("resource/short/key/a"), headers={"Cookie": cookie}) as response:
            assert response.status == 401
            assert variant(await response.json()) == "TokenNotFound"


async def test_attestation_token_is_not_an_admin_token(stack: Stack) -> None:
    async with guest(stack.kbs) as client:
        token = await client.attest()
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.kbs.api("resource-policy"), headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 401
            assert variant(await response.json()) == "AdminAuthAccess"


async def test_reference_values_and_attestation_policy_via_the_kbs(stack: Stack) -> None:
    kbs, material = stack.kbs, stack.material
    message = {"version": "0.1.0", "type": "sample", "payload": std_encode(json.dumps({"kbs-test-rv": ["abc"]}).encode())}
    assert (await admin(kbs, material, "POST", "reference-value", json=message))[0] == 200
    assert await admin(kbs, material, "GET", "reference-value/kbs-test-rv") == (200, ["abc"])
    status, reply = await admin(kbs, material, "GET", "reference-value/no-such-rv")
    assert (status, variant(reply)) == (404, "ReferenceValueNotFound")
    status, reply = await admin(kbs, material, "POST", "reference-value", json={**message, "version": "9.9.9"})
    assert status == 400, reply
    policy = "package policy\nimport rego.v1\ntrust_claims := {}\n"
    good = {"policy_id": "kbs_test", "policy": url_encode(policy.encode())}
    status, _ = await admin(kbs, material, "POST", "attestation-policy", json=good)
    assert status == 200
    bad = {"policy_id": "kbs_test", "policy": url_encode(b"package policy\nallow if {")}
    status, reply = await admin(kbs, material, "POST", "attestation-policy", json=bad)
    assert (status, variant(reply)) == (400, "PolicyEngineError")


async def test_no_secrets_in_the_kbs_log(stack: Stack) -> None:
    await prepare(stack.kbs, stack.material, "e2e/key/logged", b"never-log-this-payload")
    async with guest(stack.kbs) as client:
        assert await client.get_resource("resource/e2e/key/logged") == b"never-log-this-payload"
        token = client.token
    assert token is not None
    log = stack.kbs.proc.log.read_text()
    assert "never-log-this-payload" not in log
    assert token not in log and token.split(".")[2] not in log
    assert "Bearer" not in log and "kbs-session-id=" not in log


async def test_init_data_and_device_evidence_reach_the_token(stack: Stack) -> None:
    init_data = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"note.txt" = "hello"\n'
    evidence = AttesterEvidence(SampleAttester(), [SampleDeviceAttester()])
    async with KbsClient(stack.kbs.url, evidence=evidence, init_data_toml=init_data) as client:
        token = await client.attest()
    claims = json.loads(url_decode(token.split(".")[1], "payload"))
    cpu = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert cpu["init_data_claims"]["note.txt"] == "hello"
    assert json.loads(cpu["runtime_data_claims"]["additional-evidence"])["sampledevice"]["svn"] == "2"
    gpu = claims["submods"]["gpu0"]["ear.veraison.annotated-evidence"]
    assert "sampledevice" in gpu and set(gpu["runtime_data_claims"]) == {"nonce", "tee-pubkey"}


async def test_deeply_nested_init_data_is_400_without_traceback(stack: Stack) -> None:
    """Init-data TOML nested past the parser's recursion used to come back as a 500/503."""
    init_data = 'version = "0.1.0"\nalgorithm = "sha256"\nx = ' + "[" * 50_000 + "]" * 50_000 + "\n"
    async with KbsClient(stack.kbs.url, evidence=AttesterEvidence(SampleAttester()), init_data_toml=init_data) as client:
        with pytest.raises(MalformedRequestError, match="nested deeper"):
            await client.attest()
    assert "Traceback" not in stack.kbs.proc.output()


def _stored_session(kbs: Kbs, session_id: str) -> dict[str, Any]:
    """The session record as the KBS keeps it (its own SQLite session file, shared like a second worker would)."""
    with contextlib.closing(sqlite3.connect(kbs.config.parent / "storage-sessions.sqlite3")) as db:
        row = db.execute("SELECT value FROM kv WHERE namespace = 'kbs_protocol_session' AND key = ?", (session_id,)).fetchone()
    assert row is not None
    record: dict[str, Any] = json.loads(row[0])
    return record


def _rewrite_session(kbs: Kbs, session_id: str, record: dict[str, Any]) -> None:
    with contextlib.closing(sqlite3.connect(kbs.config.parent / "storage-sessions.sqlite3", isolation_level=None)) as db:
        value = json.dumps(record).encode()
        db.execute("UPDATE kv SET value = ? WHERE namespace = 'kbs_protocol_session' AND key = ?", (value, session_id))


async def _attested_cookie(http: aiohttp.ClientSession, kbs: Kbs, key: TeeKeyPair) -> tuple[str, str]:
    """(session id, token) of a fresh attested session."""
    nonce = await _auth(http, kbs)
    status, reply = await _attest(http, kbs, _attestation(nonce, key))
    assert status == 200, reply
    return next(c.value for c in http.cookie_jar if c.key == "kbs-session-id"), str(reply["token"])


async def test_cookie_session_past_its_token_exp_is_refused(stack: Stack) -> None:
    """A live session whose verified claims are past `exp` (+60 s leeway) releases nothing."""
    await prepare(stack.kbs, stack.material, "e2e/key/exp", b"exp-checked")
    key = TeeKeyPair.generate()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        session_id, _ = await _attested_cookie(http, stack.kbs, key)
        async with http.get(stack.kbs.api("resource/e2e/key/exp")) as response:
            assert response.status == 200
            assert key.decrypt(await response.json()) == b"exp-checked"
        record = _stored_session(stack.kbs, session_id)
        record["Attested"]["claims"]["exp"] = int(time.time()) - 120
        _rewrite_session(stack.kbs, session_id, record)
        async with http.get(stack.kbs.api("resource/e2e/key/exp")) as response:
            assert response.status == 401
            assert variant(await response.json()) == "TokenVerifierError"
        assert "Attested" in _stored_session(stack.kbs, session_id)  # the session itself is alive


async def test_session_claims_come_only_from_the_kbs_verification(stack: Stack) -> None:
    """Stored claims are the verified payload of the AS token; a client can neither add nor alter them."""
    await prepare(stack.kbs, stack.material, "e2e/key/claims", b"claims")
    key = TeeKeyPair.generate()
    forged_claims = {"exp": int(time.time()) + 3600, "forged": True}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        nonce = await _auth(http, stack.kbs)
        status, _ = await _attest(http, stack.kbs, {**_attestation(nonce, key), "claims": forged_claims})
        if status == 200:  # an unknown member is ignored: it must not reach the session
            session_id = next(c.value for c in http.cookie_jar if c.key == "kbs-session-id")
            assert "forged" not in json.dumps(_stored_session(stack.kbs, session_id))
        session_id, token = await _attested_cookie(http, stack.kbs, key)
        stored = _stored_session(stack.kbs, session_id)["Attested"]
        assert stored["claims"] == json.loads(url_decode(token.split(".")[1], "payload"))
    # A cookie naming a session that is not attested does not lend its trust to a forged bearer token.
    signing_key, chain = untrusted_signing()
    forged = mint_token(ear_claims("sample", key.public_jwk()), signing_key, chain=chain)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _auth(http, stack.kbs)
        async with http.get(stack.kbs.api("resource/e2e/key/claims"), headers={"Authorization": f"Bearer {forged}"}) as response:
            assert response.status == 401
            assert variant(await response.json()) == "TokenVerifierError"
