"""RCAR handshake edges and routing against a real `kbs` (no AS needed for these)."""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kbs.helpers import Kbs, Material, bad_tee_keys, kbs_toml, start_kbs, variant
from tests.procs import free_port
from trustee_common.jose import TeeKeyPair

REQUEST = {"version": "0.4.0", "tee": "sample", "extra-params": {"supported-hash-algorithms": ["sha384"]}}


def attestation(nonce: str) -> dict[str, Any]:
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": TeeKeyPair.generate().public_jwk()},
        "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": "AAAA"}, "additional_evidence": ""},
    }


async def auth(http: aiohttp.ClientSession, kbs: Kbs) -> tuple[str, str]:
    """(session id, nonce)"""
    async with http.post(kbs.api("auth"), json=REQUEST) as response:
        assert response.status == 200
        body = await response.json()
        return response.cookies["kbs-session-id"].value, body["nonce"]


async def post_attest(http: aiohttp.ClientSession, kbs: Kbs, body: Any, cookie: str | None) -> tuple[int, Any]:
    headers = {"Cookie": f"kbs-session-id={cookie}"} if cookie else {}
    async with aiohttp.ClientSession() as fresh:  # no cookie jar: only the explicit header
        async with fresh.post(kbs.api("attest"), json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def test_auth_returns_challenge_and_session_cookie(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    async with http.post(kbs.api("auth"), json=REQUEST) as response:
        assert response.status == 200
        body = await response.json()
        cookie = response.headers["Set-Cookie"]
    assert body["extra-params"] == ""
    assert len(base64.b64decode(body["nonce"], validate=True)) == 32
    assert re.fullmatch(r"kbs-session-id=[0-9a-f]{32}; Expires=\w{3}, \d{2} \w{3} \d{4} [\d:]{8} GMT", cookie)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"tee": "sample", "extra-params": ""}',
        b'{"version": "0.4.0", "tee": "no-such-tee", "extra-params": ""}',
        b'{"version": "0.3.0", "tee": "sample", "extra-params": ""}',
        b'{"version": "0.4.0", "tee": "sample", "extra-params": 5}',
        b'{"version": "0.4.0", "tee": "sample"}',
    ],
)
async def test_auth_rejects_malformed_requests(http: aiohttp.ClientSession, kbs: Kbs, body: bytes) -> None:
    async with http.post(kbs.api("auth"), data=body) as response:
        assert response.status == 400
        assert variant(await response.json()) == "MalformedRequest"


async def test_attest_without_or_with_bad_cookie_is_401(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    for cookie in (None, "not-a-session", "0" * 32):
        status, body = await post_attest(http, kbs, attestation("x"), cookie)
        assert (status, variant(body)) == (401, "AttestationError"), cookie


async def test_attest_malformed_body_is_400_and_keeps_the_session(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    session, nonce = await auth(http, kbs)
    bad = attestation(nonce)
    bad["runtime-data"]["tee-pubkey"] = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"}
    status, body = await post_attest(http, kbs, bad, session)
    assert (status, variant(body)) == (400, "MalformedRequest")
    status, body = await post_attest(http, kbs, {"runtime-data": {}}, session)
    assert (status, variant(body)) == (400, "MalformedRequest")
    # The session survived the malformed attempts: the next failure is about the nonce.
    status, body = await post_attest(http, kbs, attestation("wrong-nonce"), session)
    assert (status, variant(body)) == (401, "AttestationError")
    assert "does not match" in body["detail"]


BAD_KEYS = bad_tee_keys()


@pytest.mark.parametrize("name", sorted(BAD_KEYS))
async def test_attest_refuses_a_tee_key_unusable_at_release(http: aiohttp.ClientSession, kbs: Kbs, name: str) -> None:
    # Before issue 9 the zero-padded 512-bit RSA key, e = 1 and e = 2 passed /attest and failed with 500 at release.
    jwk, words = BAD_KEYS[name]
    session, nonce = await auth(http, kbs)
    body = attestation(nonce)
    body["runtime-data"]["tee-pubkey"] = jwk
    status, answer = await post_attest(http, kbs, body, session)
    assert (status, variant(answer)) == (400, "MalformedRequest"), answer
    assert words in answer["detail"] and "tee-pubkey" in answer["detail"]


async def test_wrong_nonce_consumes_the_session(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    session, nonce = await auth(http, kbs)
    status, body = await post_attest(http, kbs, attestation(nonce + "x"), session)
    assert (status, variant(body)) == (401, "AttestationError")
    status, body = await post_attest(http, kbs, attestation(nonce), session)
    assert (status, variant(body)) == (401, "AttestationError")
    assert "call /auth again" in body["detail"]


async def test_attest_with_attestation_service_down_is_503(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    session, nonce = await auth(http, kbs)
    status, body = await post_attest(http, kbs, attestation(nonce), session)
    assert (status, variant(body)) == (503, "UpstreamUnavailable")


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/kbs/v0/", 404, "PluginNotFound"),
        ("GET", "/kbs/v0/no-such-plugin/x", 404, "PluginNotFound"),
        ("GET", "/kbs/v0/auth", 405, "MethodNotAllowed"),
        ("PUT", "/kbs/v0/resource/a/b/c", 405, "MethodNotAllowed"),
        ("DELETE", "/kbs/v0/resource-policy", 405, "MethodNotAllowed"),
        ("POST", "/kbs/v0/auth/extra", 404, "InvalidRequestPath"),
        ("GET", "/elsewhere", 404, "InvalidRequestPath"),
        ("POST", "/metrics", 405, "MethodNotAllowed"),
        ("GET", "/kbs/v0/resource/a/b", 400, "MalformedRequest"),
        ("GET", "/kbs/v0/resource/a/b/c/d", 400, "MalformedRequest"),
        ("GET", "/kbs/v0/resource/a/.b/c", 400, "MalformedRequest"),
        ("GET", "/kbs/v0/resource/a%2Fb/c", 400, "MalformedRequest"),
        ("GET", "/kbs/v0/resource/a/b/%ff", 400, "MalformedRequest"),
    ],
)
async def test_routing_errors(http: aiohttp.ClientSession, kbs: Kbs, method: str, path: str, status: int, error: str) -> None:
    async with http.request(method, kbs.url + path, data=b"{}") as response:
        assert response.status == status
        assert response.content_type == "application/json"
        assert variant(await response.json()) == error


async def test_health_and_metrics(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    async with http.get(kbs.url + "/healthz") as response:
        assert response.status == 200
    await auth(http, kbs)
    async with http.get(kbs.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    match = re.search(r"^kbs_auth_requests_total (\d+)", text, re.M)
    assert match is not None and int(match.group(1)) >= 1
    assert "kbs_policy_violations_total" in text


@pytest.fixture(scope="module")
def short_kbs(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    """A KBS whose sessions live 0.6 s (`timeout` is fractional minutes)."""
    directory: Path = tmp_path_factory.mktemp("kbs-short")
    port = free_port()
    server = start_kbs(directory, kbs_toml(port, material, directory / "repo", as_port=free_port(), timeout_minutes=0.01), port)
    yield server
    server.proc.stop()


async def test_expired_session_is_refused(http: aiohttp.ClientSession, short_kbs: Kbs) -> None:
    session, nonce = await auth(http, short_kbs)
    await asyncio.sleep(1.0)
    status, body = await post_attest(http, short_kbs, attestation(nonce), session)
    assert (status, variant(body)) == (401, "AttestationError")
    assert "expired" in body["detail"]


async def test_expired_sessions_are_purged_in_the_background(http: aiohttp.ClientSession, short_kbs: Kbs) -> None:
    def stored_sessions() -> int:
        with sqlite3.connect(short_kbs.config.parent / "storage-sessions.sqlite3") as db:
            row = db.execute("SELECT count(*) FROM kv WHERE namespace = 'kbs_protocol_session'").fetchone()
            return int(row[0])

    await auth(http, short_kbs)
    await auth(http, short_kbs)
    assert stored_sessions() >= 2
    # Lifetime 0.6 s, purge every 1 s: within 3 s both are gone without any request touching them.
    await asyncio.sleep(3.0)
    assert stored_sessions() == 0
