"""Overload shedding against a real KBS: past `max_in_flight_requests` a request gets 503 `ServerBusy` at once.

The KBS's AS is a socket that accepts and never answers, so resource
requests with an epoch-stamped token stay in progress (waiting for the
appraisal epoch) until the KBS's 5 s epoch deadline. With a limit of 2,
two such requests fill the KBS: every other request is refused quickly
with `Retry-After`, admin requests included, while `/healthz` and
`/metrics` keep answering; the two in progress still complete, and
afterwards requests are admitted again. Nothing logs a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.kbs.helpers import Kbs, Material, ear_claims, kbs_toml, load_signing, mint_token, policy_body, start_kbs, variant
from tests.procs import free_port
from trustee_common.epoch import CLAIM as EPOCH_CLAIM
from trustee_common.errors import ConfigError
from trustee_common.jose import TeeKeyPair

LIMIT = 2
RETRY_AFTER = 3
#: Generous bound for "answered at once" on a loaded 2-core machine (held requests wait 5 s).
FAST_SECONDS = 2.0


@pytest.fixture(scope="module")
def silent_as() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (an AS that hangs)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def busy_kbs(tmp_path_factory: pytest.TempPathFactory, material: Material, silent_as: int) -> Iterator[Kbs]:
    """A fresh KBS per test: once its AS calls have timed out, the channel's backoff fails later calls at once."""
    directory = tmp_path_factory.mktemp("kbs-shed")
    port = free_port()
    extra = f"max_in_flight_requests = {LIMIT}\nretry_after_seconds = {RETRY_AFTER}"
    server = start_kbs(directory, kbs_toml(port, material, directory / "repo", as_port=silent_as, extra_http=extra), port)
    yield server
    server.proc.stop()


def epoch_token(material: Material) -> str:
    """A valid token that carries an appraisal epoch: its release asks the (silent) AS for the current epoch."""
    signing_key, chain = load_signing(material)
    return mint_token({**ear_claims("sample", TeeKeyPair.generate().public_jwk()), EPOCH_CLAIM: "p:1.rv:1"}, signing_key, chain=chain)


async def timed(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, CIMultiDict[str], Any, float]:
    started = time.monotonic()
    async with http.request(method, url, **kwargs) as response:
        body = await response.json(content_type=None) if response.content_type == "application/json" else await response.text()
        return response.status, CIMultiDict(response.headers), body, time.monotonic() - started


async def metric(http: aiohttp.ClientSession, kbs: Kbs, name: str) -> float:
    async with http.get(f"{kbs.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def wait_in_flight(http: aiohttp.ClientSession, kbs: Kbs, count: int) -> None:
    deadline = time.monotonic() + 15.0
    while await metric(http, kbs, "kbs_http_requests_in_flight") < count:
        assert time.monotonic() < deadline, f"the KBS never had {count} requests in progress"
        await asyncio.sleep(0.05)


async def test_requests_above_the_limit_get_a_fast_503_with_retry_after(busy_kbs: Kbs, material: Material) -> None:
    resource = busy_kbs.api("resource/default/key/held")
    bearer = {"Authorization": f"Bearer {epoch_token(material)}"}
    async with aiohttp.ClientSession() as http:
        held = [asyncio.create_task(timed(http, "GET", resource, headers=bearer)) for _ in range(LIMIT)]
        await wait_in_flight(http, busy_kbs, LIMIT)

        excess = await asyncio.gather(*(timed(http, "GET", resource, headers=bearer) for _ in range(6)),
                                      timed(http, "POST", busy_kbs.api("auth"), json={}),
                                      timed(http, "POST", busy_kbs.api("resource-policy"), json=policy_body("package policy\n"),
                                            headers={"Authorization": f"Bearer {material.admin_token()}"}))
        for status, headers, body, elapsed in excess:
            assert status == 503, body
            assert variant(body) == "ServerBusy"
            assert headers["Retry-After"] == str(RETRY_AFTER)
            assert "X-Request-Id" in headers
            assert elapsed < FAST_SECONDS

        status, _, _, elapsed = await timed(http, "GET", f"{busy_kbs.url}/healthz")
        assert status == 200 and elapsed < FAST_SECONDS
        assert await metric(http, busy_kbs, "kbs_http_requests_shed_total") >= len(excess)
        assert not any(task.done() for task in held)  # the excess did not displace the admitted requests

        for status, _, body, _ in await asyncio.wait_for(asyncio.gather(*held), timeout=60):
            assert status == 503 and variant(body) == "UpstreamUnavailable"  # served to the end: the AS never answered

        status, _, body, _ = await timed(http, "GET", resource, headers=bearer)
        assert variant(body) != "ServerBusy", (status, body)  # the slots were given back
        assert await metric(http, busy_kbs, "kbs_http_requests_in_flight") == 0
    log = busy_kbs.proc.output()
    assert "Traceback" not in log
    assert f"at the admission limit of {LIMIT} requests in progress (max_in_flight_requests {LIMIT})" in log


async def test_new_sessions_are_refused_before_requests_of_flows_in_progress(busy_kbs: Kbs, material: Material) -> None:
    """With a limit of 2, /auth is admitted only below 1 in progress; a flow's next request still gets the last slot."""
    resource = busy_kbs.api("resource/default/key/held")
    bearer = {"Authorization": f"Bearer {epoch_token(material)}"}
    request = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
    async with aiohttp.ClientSession() as http:
        first = asyncio.create_task(timed(http, "GET", resource, headers=bearer))
        await wait_in_flight(http, busy_kbs, 1)
        status, headers, body, elapsed = await timed(http, "POST", busy_kbs.api("auth"), json=request)
        assert (status, variant(body), headers["Retry-After"]) == (503, "ServerBusy", str(RETRY_AFTER)) and elapsed < FAST_SECONDS
        second = asyncio.create_task(timed(http, "GET", resource, headers=bearer))
        await wait_in_flight(http, busy_kbs, 2)  # admitted: not a new session
        for status, _, body, _ in await asyncio.wait_for(asyncio.gather(first, second), timeout=60):
            assert status == 503 and variant(body) == "UpstreamUnavailable"
        status, _, body, _ = await timed(http, "POST", busy_kbs.api("auth"), json=request)
        assert status == 200, body


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_in_flight_requests", "0", "max_in_flight_requests must be >= 1"),
    ("retry_after_seconds", "-1", "retry_after_seconds must be >= 0"),
    ("retry_after_seconds", "3601", "retry_after_seconds must be <= 3600"),
    ("admission_target_latency_ms", "-5", "admission_target_latency_ms must be >= 0"),
    ("admission_target_latency_ms", "60001", "admission_target_latency_ms must be <= 60000"),
    ("admission_target_latency_ms", "0.5", "admission_target_latency_ms"),
])
def test_bad_shedding_settings_are_refused(material: Material, tmp_path: Path, key: str, value: str, message: str) -> None:
    import tomllib

    from kbs.config import parse_kbs_config

    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port(), extra_http=f"{key} = {value}")
    with pytest.raises(ConfigError, match=message):
        parse_kbs_config(tomllib.loads(text), default_dir=tmp_path)


def test_shedding_defaults(material: Material, tmp_path: Path) -> None:
    import tomllib

    from kbs.config import parse_kbs_config

    config = parse_kbs_config(tomllib.loads(kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port())), default_dir=tmp_path)
    http = config.http_server
    assert (http.max_in_flight_requests, http.retry_after_seconds, http.admission_target_latency_ms) == (64, 1, 100)


async def test_slow_requests_lower_the_admission_limit(tmp_path_factory: pytest.TempPathFactory, material: Material,
                                                        silent_as: int) -> None:
    """Requests that take far longer than the latency target halve the limit (to the floor: half of 8), as the gauge shows."""
    directory = tmp_path_factory.mktemp("kbs-adapt")
    port = free_port()
    extra = "max_in_flight_requests = 8\nadmission_target_latency_ms = 100"
    kbs = start_kbs(directory, kbs_toml(port, material, directory / "repo", as_port=silent_as, extra_http=extra), port)
    try:
        resource = kbs.api("resource/default/key/held")
        bearer = {"Authorization": f"Bearer {epoch_token(material)}"}
        async with aiohttp.ClientSession() as http:
            assert await metric(http, kbs, "kbs_http_admission_limit") == 8
            held = [asyncio.create_task(timed(http, "GET", resource, headers=bearer)) for _ in range(8)]
            await wait_in_flight(http, kbs, 8)
            status, _, body, _ = await timed(http, "GET", resource, headers=bearer)
            assert (status, variant(body)) == (503, "ServerBusy")
            await asyncio.wait_for(asyncio.gather(*held), timeout=60)  # each took the AS deadline of 5 s
            await asyncio.sleep(0.2)  # past the window: the next completion closes it
            await timed(http, "GET", kbs.api("resource-policy"), headers={"Authorization": f"Bearer {material.admin_token()}"})
            assert await metric(http, kbs, "kbs_http_admission_limit") == 4
    finally:
        kbs.proc.stop()
