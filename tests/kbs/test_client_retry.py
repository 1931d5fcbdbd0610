"""The guest client (`guest.kbs_protocol.KbsClient`) and `kbs-client`'s admin calls retry a busy KBS.

Between the client and a real KBS sits a test-only stand-in for a busy
network peer: it answers the first N requests of a kind with 503
`ServerBusy` + `Retry-After: 0`, or closes their connection without an
answer (as a KBS at its connection cap does to an idle keep-alive
connection), then forwards the rest to the KBS (cookies and headers
included). Our code on both ends is the real one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from kbs_client.admin import AdminClient

from guest.attesters.sample import SampleAttester
from guest.backoff import RetryPolicy
from guest.kbs_protocol import AttesterEvidence, ConnectionDroppedError, KbsClient
from tests.kbs.helpers import ALLOW_ALL, Kbs, Material, ear_claims, load_signing, mint_token
from tests.procs import free_port
from trustee_common.errors import ERROR_TYPE_PREFIX, ServerBusyError, UpstreamError
from trustee_common.jose import TeeKeyPair

FORWARDED = ("Cookie", "Authorization", "Content-Type")


@dataclass
class BusyPeer:
    """Refuses `refuse[(method, first segment)]` requests with 503 ServerBusy, then forwards to `target`."""

    target: str
    refuse: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Requests of a kind whose connection is closed unanswered (counted after `refuse`).
    drop: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    cookies: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = (request.method, request.match_info["tail"].split("/")[0])
        self.seen[key] += 1
        if key[1] == "attest":
            self.cookies.append(request.headers.get("Cookie"))
        if self.seen[key] <= self.refuse.get(key, 0):
            body = {"type": ERROR_TYPE_PREFIX + "ServerBusy", "detail": "busy (test peer)"}
            return web.json_response(body, status=503, headers={"Retry-After": "0"})
        if self.seen[key] <= self.refuse.get(key, 0) + self.drop.get(key, 0):
            assert request.transport is not None
            request.transport.abort()  # no status line, no headers: the client sees the connection reset
            raise asyncio.CancelledError
        headers = {h: request.headers[h] for h in FORWARDED if h in request.headers}
        async with aiohttp.ClientSession() as http, http.request(request.method, self.target + request.path, headers=headers,
                                                                 data=await request.read()) as answer:
            out = web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)
            for cookie in answer.headers.getall("Set-Cookie", []):
                out.headers.add("Set-Cookie", cookie)
            return out


@pytest.fixture
async def peer(kbs: Kbs) -> AsyncIterator[BusyPeer]:
    busy = BusyPeer(kbs.url)
    app = web.Application()
    app.router.add_route("*", "/kbs/v0/{tail:.*}", busy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    busy.url = f"http://127.0.0.1:{port}"
    yield busy
    await runner.cleanup()


async def allow_and_store(kbs: Kbs, material: Material, path: str, secret: bytes) -> None:
    async with AdminClient(kbs.url, token=material.admin_token()) as admin:
        await admin.set_resource_policy(ALLOW_ALL)
        await admin.set_resource(path, secret)


def passport(material: Material) -> tuple[str, TeeKeyPair]:
    key = TeeKeyPair.generate()
    signing_key, chain = load_signing(material)
    return mint_token(ear_claims("sample", key.public_jwk()), signing_key, chain=chain), key


async def test_resource_fetch_succeeds_after_two_busy_answers(peer: BusyPeer, kbs: Kbs, material: Material) -> None:
    await allow_and_store(kbs, material, "shed/key/one", b"after the rush")
    token, key = passport(material)
    peer.refuse[("GET", "resource")] = 2
    async with KbsClient(peer.url, token=token, key_pair=key) as client:
        assert await client.get_resource("resource/shed/key/one") == b"after the rush"
    assert peer.seen[("GET", "resource")] == 3


async def test_retries_are_bounded(peer: BusyPeer, kbs: Kbs, material: Material) -> None:
    token, key = passport(material)
    peer.refuse[("GET", "resource")] = 100
    async with KbsClient(peer.url, token=token, key_pair=key, retry=RetryPolicy(attempts=3, base_backoff=0.01)) as client:
        with pytest.raises(ServerBusyError):
            await client.get_resource("resource/shed/key/one")
    assert peer.seen[("GET", "resource")] == 3


async def test_busy_attest_starts_the_handshake_again(peer: BusyPeer) -> None:
    """A 503 at /attest redoes /auth (a fresh session); a 503 without Retry-After that is not ServerBusy is not retried."""
    peer.refuse[("POST", "attest")] = 1
    async with KbsClient(peer.url, evidence=AttesterEvidence(SampleAttester())) as client:
        with pytest.raises(UpstreamError):  # the second /attest reaches the KBS, whose AS is down: 503 UpstreamUnavailable
            await client.attest()
    assert peer.seen[("POST", "auth")] == 2 and peer.seen[("POST", "attest")] == 2
    assert peer.cookies[0] and peer.cookies[1] and peer.cookies[0] != peer.cookies[1]


async def test_admin_call_retried_when_busy(peer: BusyPeer, kbs: Kbs, material: Material) -> None:
    await allow_and_store(kbs, material, "shed/key/other", b"x")
    peer.refuse[("POST", "resource")] = 2
    async with AdminClient(peer.url, token=material.admin_token()) as admin:
        await admin.set_resource("shed/key/admin", b"written once the KBS had room")
    assert peer.seen[("POST", "resource")] == 3
    token, key = passport(material)
    async with KbsClient(kbs.url, token=token, key_pair=key) as client:
        assert await client.get_resource("resource/shed/key/admin") == b"written once the KBS had room"


async def test_clients_sharing_a_connector_keep_their_own_sessions(peer: BusyPeer) -> None:
    """A caller-owned connector serves many clients (the benchmark's generator) and stays open when they close."""
    connector = aiohttp.TCPConnector()
    try:
        for _ in range(2):
            async with KbsClient(peer.url, evidence=AttesterEvidence(SampleAttester()), connector=connector) as client:
                with pytest.raises(UpstreamError):  # the KBS's AS is down: /attest fails after /auth set the cookie
                    await client.attest()
        assert not connector.closed
        assert len(peer.cookies) == 2 and all(peer.cookies) and peer.cookies[0] != peer.cookies[1]
    finally:
        await connector.close()


async def test_resource_fetch_survives_two_dropped_connections(peer: BusyPeer, kbs: Kbs, material: Material) -> None:
    """A connection closed unanswered (a KBS at its connection cap, a worker that stopped) is retried like a 503."""
    await allow_and_store(kbs, material, "shed/key/dropped", b"third time lucky")
    token, key = passport(material)
    peer.drop[("GET", "resource")] = 2
    async with KbsClient(peer.url, token=token, key_pair=key, retry=RetryPolicy(base_backoff=0.01)) as client:
        assert await client.get_resource("resource/shed/key/dropped") == b"third time lucky"
    assert peer.seen[("GET", "resource")] >= 3


async def test_dropped_connections_are_retried_within_the_bounds(peer: BusyPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="guest.backoff")
    token, key = passport_unsigned()
    peer.drop[("GET", "resource")] = 100
    async with KbsClient(peer.url, token=token, key_pair=key, retry=RetryPolicy(attempts=3, base_backoff=0.01)) as client:
        with pytest.raises(ConnectionDroppedError, match="closed the connection without answering"):
            await client.get_resource("resource/shed/key/one")
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all("closed the connection without answering" in m for m in retries), retries
    # aiohttp itself may send an idempotent GET once more on a new connection when a reused one was closed.
    assert 3 <= peer.seen[("GET", "resource")] <= 6


async def test_a_dropped_attest_starts_the_handshake_again(peer: BusyPeer) -> None:
    peer.drop[("POST", "attest")] = 1
    async with KbsClient(peer.url, evidence=AttesterEvidence(SampleAttester()), retry=RetryPolicy(base_backoff=0.01)) as client:
        with pytest.raises(UpstreamError):  # the second /attest reaches the KBS, whose AS is down: 503 UpstreamUnavailable
            await client.attest()
    assert peer.seen[("POST", "auth")] == 2 and peer.seen[("POST", "attest")] == 2


async def test_a_kbs_that_cannot_be_reached_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens: no retry (a guest learns at once that its KBS address is wrong or down)."""
    caplog.set_level(logging.INFO, logger="guest.backoff")
    async with KbsClient(f"http://127.0.0.1:{free_port()}", evidence=AttesterEvidence(SampleAttester())) as client:
        with pytest.raises(UpstreamError, match="cannot reach the KBS") as raised:
            await client.attest()
    assert not isinstance(raised.value, ConnectionDroppedError)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def passport_unsigned() -> tuple[str, TeeKeyPair]:
    """A token that never reaches a KBS (the peer drops every request)."""
    return "e30.e30.sig", TeeKeyPair.generate()
