"""Hostile input against a real KBS: a 4xx with the JSON error shape, bounded details, no traceback.

The shared KBS points at a closed AS port: every case here is refused
before the AS would be asked, except the one that checks that the AS's
address does not leak into the 503.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import aiohttp

from tests.kbs.helpers import Kbs, variant
from trustee_common.jose import TeeKeyPair

SAMPLE_REQUEST = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
DEEP = 100_000


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def attestation(nonce: str, additional_evidence: str = "", init_data: Any = None) -> dict[str, Any]:
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": TeeKeyPair.generate().public_jwk()},
        "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": ""}, "additional_evidence": additional_evidence},
        "init-data": init_data,
    }


async def test_deeply_nested_additional_evidence_is_400(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    status, challenge = await call(http, "POST", kbs.api("auth"), json=SAMPLE_REQUEST)
    assert status == 200
    body = attestation(challenge["nonce"], additional_evidence="[" * DEEP + "]" * DEEP)
    status, error = await call(http, "POST", kbs.api("attest"), json=body)
    assert (status, variant(error)) == (400, "MalformedRequest")
    assert "nested deeper" in error["detail"]


async def test_deeply_nested_request_body_is_400(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    status, error = await call(http, "POST", kbs.api("attest"), data=b"[" * DEEP, headers={"Content-Type": "application/json"})
    assert (status, variant(error)) == (400, "MalformedRequest")


async def test_long_path_segment_is_400(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    status, error = await call(http, "GET", kbs.api(f"resource/repo/type/{'a' * 300}"))
    assert (status, variant(error)) == (400, "MalformedRequest")
    assert "longer than 255" in error["detail"] and len(error["detail"]) < 400


async def test_long_version_is_clipped_in_the_error(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    request = dict(SAMPLE_REQUEST, version="9" * 10_000)
    status, error = await call(http, "POST", kbs.api("auth"), json=request)
    assert (status, variant(error)) == (400, "MalformedRequest")
    assert "version mismatch" in error["detail"] and error["detail"].endswith("…") and len(error["detail"]) < 400


async def test_auth_body_is_small(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    for request in (dict(SAMPLE_REQUEST, version="9" * 100_000), dict(SAMPLE_REQUEST, **{"extra-params": {"x": "y" * 40_000}})):
        status, error = await call(http, "POST", kbs.api("auth"), json=request)
        assert (status, variant(error)) == (413, "PayloadTooLarge")


def largest_session(kbs: Kbs) -> int:
    with contextlib.closing(sqlite3.connect(kbs.config.parent / "storage-sessions.sqlite3")) as db:
        row = db.execute("SELECT max(length(value)) FROM kv WHERE namespace = 'kbs_protocol_session'").fetchone()
    return int(row[0] or 0)


async def test_sessions_do_not_keep_client_payload(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    request = dict(SAMPLE_REQUEST, **{"extra-params": {"pad": "z" * 15_000}})
    status, _challenge = await call(http, "POST", kbs.api("auth"), json=request)
    assert status == 200
    assert largest_session(kbs) < 1024


async def test_as_address_is_not_echoed(kbs: Kbs, http: aiohttp.ClientSession) -> None:
    status, challenge = await call(http, "POST", kbs.api("auth"), json=SAMPLE_REQUEST)
    assert status == 200
    status, error = await call(http, "POST", kbs.api("attest"), json=attestation(challenge["nonce"]))
    assert (status, variant(error)) == (503, "UpstreamUnavailable")
    assert "127.0.0.1" not in error["detail"] and "ipv4" not in error["detail"]


def test_no_traceback_in_the_log(kbs: Kbs) -> None:
    assert "Traceback" not in kbs.proc.output()
