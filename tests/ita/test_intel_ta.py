"""`[attestation_service] type = "intel_ta"`: the real KBS process against the stand-in ITA over HTTPS.

The corpus TDX quote (dcap-qvl v4, PROVENANCE.md) is appraised by the
stand-in with our TDX verifier at the corpus's verification time. Its
REPORTDATA cannot bind the fresh TEE key of a test, so for the release flow
the stand-in does not enforce SHA-512(runtime_data) == REPORTDATA (real ITA
does); `test_binding_bytes` checks instead that the runtime data the KBS
sends hashes to exactly what the guest puts in REPORTDATA, and
`test_binding_enforced` that ITA's refusal reaches the guest as 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ita.conftest import API_KEY, SECRET, StandIn, claims_of, control, ita_config, start
from tests.kbs.helpers import Kbs
from tests.procs import free_port
from tests.tdx.corpus import V4
from trustee_common.canonical import HashAlgorithm, primary_runtime_data, runtime_data_digest
from trustee_common.jose import TeeKeyPair

pytestmark = pytest.mark.e2e
SHA512 = {"supported-hash-algorithms": ["sha256", "sha384", "sha512"]}


class Guest:
    """A TDX guest presenting the corpus quote, with a fresh TEE key."""

    def __init__(self, kbs: Kbs, http: aiohttp.ClientSession) -> None:
        self.kbs = kbs
        self.http = http
        self.key = TeeKeyPair.generate()
        self.nonce = ""

    async def auth(self, extra: Any = SHA512) -> dict[str, Any]:
        body = {"version": "0.4.0", "tee": "tdx", "extra-params": extra}
        async with self.http.post(self.kbs.api("auth"), json=body) as response:
            assert response.status == 200, await response.text()
            challenge: dict[str, Any] = await response.json()
        self.nonce = challenge["nonce"]
        return challenge

    async def attest(self) -> tuple[int, dict[str, Any]]:
        await self.auth()
        evidence = {"quote": base64.b64encode(V4.quote).decode(), "cc_eventlog": None}
        body = {"runtime-data": {"nonce": self.nonce, "tee-pubkey": self.key.public_jwk()},
                "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}
        async with self.http.post(self.kbs.api("attest"), json=body) as response:
            return response.status, await response.json()

    async def resource(self, path: str = "default/key/1", token: str | None = None) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.http.get(self.kbs.api(f"resource/{path}"), headers=headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def test_auth_selects_sha512_for_tdx(ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    guest = Guest(ita_kbs, http)
    assert (await guest.auth())["extra-params"] == {"selected-hash-algorithm": "sha512"}
    assert (await guest.auth(""))["extra-params"] == ""
    body = {"version": "0.4.0", "tee": "tdx", "extra-params": {"supported-hash-algorithms": ["sha384"]}}
    async with http.post(ita_kbs.api("auth"), json=body) as response:
        assert response.status == 400
        assert "sha512" in (await response.json())["detail"]


async def test_release_through_ita(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    guest = Guest(ita_kbs, http)
    status, reply = await guest.attest()
    assert status == 200, reply
    claims = claims_of(reply["token"])
    assert claims["ver"] == "2.0.0" and claims["tdx"]["attester_tcb_status"] == "UpToDate"
    assert claims["tdx"]["attester_runtime_data"]["tee-pubkey"] == guest.key.public_jwk()
    status, envelope = await guest.resource()
    assert status == 200, envelope
    assert guest.key.decrypt(envelope) == SECRET


async def test_binding_bytes(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    """The v2 body: `runtime_data` is what the guest hashes (SHA-512, as selected) into REPORTDATA."""
    guest = Guest(ita_kbs, http)
    status, _ = await guest.attest()
    assert status == 200
    body = await control(reset, "last")
    assert set(body) == {"policy_ids", "policy_must_match", "tdx"}
    assert body["policy_ids"] == [] and body["policy_must_match"] is False
    assert body["tdx"]["quote"] == base64.b64encode(V4.quote).decode()
    sent = base64.b64decode(body["tdx"]["runtime_data"])
    guest_digest = runtime_data_digest(primary_runtime_data(guest.nonce, guest.key.public_jwk(), ""), HashAlgorithm.SHA512)
    assert hashlib.sha512(sent).digest() == guest_digest
    assert json.loads(sent) == {"additional-evidence": "", "nonce": guest.nonce, "tee-pubkey": guest.key.public_jwk()}


async def test_binding_enforced(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    await control(reset, "config", {"enforce_binding": True})
    status, reply = await Guest(ita_kbs, http).attest()
    assert status == 401
    assert reply["type"].endswith("AttestationError")
    assert "Intel Trust Authority rejected the evidence" in reply["detail"]


async def test_policy_sees_ear_view(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    """The default resource policy (submods.cpu0, ear.status) released above; an RS256 token works too."""
    await control(reset, "config", {"alg": "RS256"})
    guest = Guest(ita_kbs, http)
    status, reply = await guest.attest()
    assert status == 200, reply
    status, envelope = await guest.resource()
    assert status == 200 and guest.key.decrypt(envelope) == SECRET


@pytest.mark.parametrize(("setting", "reason"), [
    ({"lifetime": -600}, "expired"),
    ({"issued_offset": 3600}, "not valid yet"),
    ({"unpublished": True}, "no trusted JWK has kid"),
])
async def test_bad_token_from_ita(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession, setting: dict[str, Any],
                                  reason: str) -> None:
    await control(reset, "config", setting)
    status, reply = await Guest(ita_kbs, http).attest()
    assert status == 503
    assert "Intel Trust Authority returned a token that does not verify" in reply["detail"]
    assert reason in reply["detail"]


async def test_rotation_picked_up(reset: StandIn, ita_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    guest = Guest(ita_kbs, http)
    assert (await guest.attest())[0] == 200
    await control(reset, "rotate", {})
    status, reply = await guest.attest()
    assert status == 200, reply
    status, envelope = await guest.resource()
    assert status == 200 and guest.key.decrypt(envelope) == SECRET


async def test_refresh_is_bounded(reset: StandIn, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """With a 1-hour bound, the startup fetch counts: a rotated key is not fetched for an hour."""
    port = free_port()
    config = ita_config(port, tmp_path / "repo", reset.url).replace("jwks_refresh_interval_seconds = 0",
                                                                    "jwks_refresh_interval_seconds = 3600")
    kbs = start(tmp_path, config, reset, port)
    try:
        guest = Guest(kbs, http)
        assert (await guest.attest())[0] == 200
        await control(reset, "rotate", {})
        status, reply = await guest.attest()
        assert status == 503 and "no trusted JWK has kid" in reply["detail"]
    finally:
        kbs.proc.stop()


@pytest.mark.parametrize("allow", [False, True])
async def test_unmatched_policy(reset: StandIn, tmp_path: Path, http: aiohttp.ClientSession, allow: bool) -> None:
    port = free_port()
    extra = f'policy_ids = ["policy-a", "policy-b"]\nallow_unmatched_policy = {str(allow).lower()}'
    kbs = start(tmp_path, ita_config(port, tmp_path / "repo", reset.url, extra=extra), reset, port)
    try:
        await control(reset, "config", {"unmatched": ["policy-b"]})
        guest = Guest(kbs, http)
        status, reply = await guest.attest()
        sent = await control(reset, "last")
        assert sent["policy_ids"] == ["policy-a", "policy-b"] and sent["policy_must_match"] is (not allow)
        if not allow:  # ITA refuses (policy_must_match); and if it did not, the KBS would
            assert status == 401 and "Intel Trust Authority rejected the evidence" in reply["detail"]
            await control(reset, "config", {"ignore_must_match": True})
            status, reply = await guest.attest()
            assert status == 401 and "does not match policies policy-b" in reply["detail"]
            return
        assert status == 200, reply
        status, envelope = await guest.resource()
        assert status == 200 and guest.key.decrypt(envelope) == SECRET
    finally:
        kbs.proc.stop()


async def test_ita_down(reset: StandIn, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """ITA's JWK set from a file, its API at a closed port: 503 naming ITA."""
    async with aiohttp.ClientSession() as session, session.get(f"{reset.url}/certs", ssl=reset.ssl()) as response:
        (tmp_path / "certs.json").write_bytes(await response.read())
    port = free_port()
    config = ita_config(port, tmp_path / "repo", f"https://127.0.0.1:{free_port()}", certs=str(tmp_path / "certs.json"))
    kbs = start(tmp_path, config, reset, port)
    try:
        status, reply = await Guest(kbs, http).attest()
        assert status == 503
        assert reply["type"].endswith("UpstreamUnavailable")
        assert "Intel Trust Authority at https://127.0.0.1:" in reply["detail"] and "unreachable" in reply["detail"]
    finally:
        kbs.proc.stop()


async def test_wrong_api_key(reset: StandIn, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    port = free_port()
    wrong = "wrong-key-7d1e6c"
    kbs = start(tmp_path, ita_config(port, tmp_path / "repo", reset.url, api_key=wrong), reset, port)
    try:
        status, reply = await Guest(kbs, http).attest()
        assert status == 503
        assert "refused the KBS's API key (HTTP 401)" in reply["detail"]
    finally:
        kbs.proc.stop()
    log = kbs.proc.log.read_text(errors="replace")
    assert wrong not in log and API_KEY not in log
