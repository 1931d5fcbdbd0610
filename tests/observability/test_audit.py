"""The KBS audit log against real processes: admin changes, releases, denials, attestations, failures.

Each test reads `audit.jsonl` back as JSON lines and checks the events its
own requests produced (found by request id or resource path), and that no
secret byte ever reaches the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence
from tests.kbs.helpers import ALLOW_ALL, DENY_ALL, Kbs, Material, kbs_toml, policy_body, run_kbs_expect_exit, variant
from tests.observability.conftest import PREEXISTING_LINE, Stack
from tests.procs import free_port
from trustee_common.admin_token import DEFAULT_ISSUER
from trustee_common.canonical import HashAlgorithm
from trustee_common.jose import TeeKeyPair

SAMPLE_REQUEST = {"version": "0.4.0", "tee": "sample", "extra-params": ""}


def audit_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events_for(path: Path, request_id: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(path) if e.get("request_id") == request_id]


async def admin(kbs: Kbs, material: Material | None, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    """(status, X-Request-Id) of one admin request; no token when `material` is None."""
    headers = {} if material is None else {"Authorization": f"Bearer {material.admin_token(extra_claims={'sub': 'alice'})}"}
    async with aiohttp.ClientSession() as http, http.request(method, kbs.api(path), headers=headers, **kwargs) as response:
        await response.read()
        return response.status, response.headers["X-Request-Id"]


async def attested_session(kbs: Kbs, http: aiohttp.ClientSession, request_id: str | None = None) -> str:
    """Run /auth and /attest with the sample TEE; returns the /attest response's request id."""
    async with http.post(kbs.api("auth"), json=SAMPLE_REQUEST) as response:
        assert response.status == 200
        nonce = str((await response.json())["nonce"])
    key = TeeKeyPair.generate()
    evidence = AttesterEvidence(SampleAttester()).composite(nonce, key.public_jwk(), HashAlgorithm.SHA384)
    body = {"runtime-data": {"nonce": nonce, "tee-pubkey": key.public_jwk()}, "tee-evidence": evidence}
    headers = {} if request_id is None else {"X-Request-Id": request_id}
    async with http.post(kbs.api("attest"), json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["X-Request-Id"]


async def get_resource(kbs: Kbs, http: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, Any], str]:
    async with http.get(kbs.api(f"resource/{path}")) as response:
        return response.status, await response.json(content_type=None), response.headers["X-Request-Id"]


def no_secret_in(path: Path, secret: bytes) -> None:
    raw = path.read_bytes()
    for form in (secret, base64.b64encode(secret), base64.urlsafe_b64encode(secret).rstrip(b"="), secret.hex().encode()):
        assert form not in raw


def cookie_jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)


def test_the_log_is_appended_to_never_rewritten(stack: Stack) -> None:
    assert stack.audit.read_text().startswith(PREEXISTING_LINE)


async def test_admin_change_names_who_and_what_with_a_digest_never_the_secret(stack: Stack) -> None:
    secret = b"audit-secret-" + secrets.token_hex(16).encode()
    status, rid = await admin(stack.kbs, stack.material, "POST", "resource/audit/admin/key", data=secret)
    assert status == 200
    [event] = events_for(stack.audit, rid)
    assert event["event"] == "admin" and event["action"] == "resource.write" and event["outcome"] == "ok"
    assert event["who"] == {"mode": "AuthenticatedAuthorization", "sub": "alice", "iss": DEFAULT_ISSUER, "role": "admin"}
    assert event["method"] == "POST" and event["endpoint"] == "/kbs/v0/resource/audit/admin/key"
    assert event["target"] == {"resource": "audit/admin/key"}
    assert event["content"] == {"sha256": hashlib.sha256(secret).hexdigest(), "bytes": len(secret)}
    assert event["peer"] == "127.0.0.1" and event["service"] == "kbs" and event["ts"].endswith("Z")
    no_secret_in(stack.audit, secret)


async def test_policy_change_records_the_policy_digest(stack: Stack) -> None:
    status, rid = await admin(stack.kbs, stack.material, "POST", "resource-policy", json=policy_body(ALLOW_ALL))
    assert status == 200
    [event] = events_for(stack.audit, rid)
    assert (event["action"], event["outcome"]) == ("resource_policy.set", "ok")
    assert event["content"]["sha256"] == hashlib.sha256(ALLOW_ALL.encode()).hexdigest()


async def test_refused_admin_requests_are_audited_as_denied(stack: Stack) -> None:
    status, rid = await admin(stack.kbs, None, "DELETE", "resource/audit/admin/key")
    assert status == 401
    [event] = events_for(stack.audit, rid)
    assert (event["action"], event["outcome"], event["reason"]["type"]) == ("resource.delete", "denied", "AdminAuthAccess")
    assert "who" not in event


async def test_release_and_denial_are_audited_with_tee_policy_status_and_reason(stack: Stack) -> None:
    secret = b"released-" + secrets.token_hex(16).encode()
    assert (await admin(stack.kbs, stack.material, "POST", "resource/audit/release/key", data=secret))[0] == 200
    assert (await admin(stack.kbs, stack.material, "POST", "resource-policy", json=policy_body(ALLOW_ALL)))[0] == 200
    async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
        attest_rid = await attested_session(stack.kbs, http)
        status, _, rid = await get_resource(stack.kbs, http, "audit/release/key")
        assert status == 200
        [released] = events_for(stack.audit, rid)
        assert (released["event"], released["outcome"], released["resource"]) == ("resource.release", "released", "audit/release/key")
        assert released["tee"] == ["sample"] and set(released["ear_status"]) == {"cpu0"}
        assert released["policy"] == {"id": "resource-policy.rego", "sha256": hashlib.sha256(ALLOW_ALL.encode()).hexdigest()}
        [attested] = events_for(stack.audit, attest_rid)
        assert (attested["event"], attested["outcome"], attested["tee"]) == ("attestation", "attested", "sample")
        assert released["session_ref"] == attested["session_ref"] and len(released["session_ref"]) == 16
        assert released["ear_status"] == attested["ear_status"]

        assert (await admin(stack.kbs, stack.material, "POST", "resource-policy", json=policy_body(DENY_ALL)))[0] == 200
        status, body, rid = await get_resource(stack.kbs, http, "audit/release/key")
        assert (status, variant(body)) == (403, "PolicyDeny")
    [denied] = events_for(stack.audit, rid)
    assert (denied["outcome"], denied["reason"]["type"], denied["resource"]) == ("denied", "PolicyDeny", "audit/release/key")
    assert denied["policy"]["sha256"] == hashlib.sha256(DENY_ALL.encode()).hexdigest() and denied["tee"] == ["sample"]
    no_secret_in(stack.audit, secret)
    session_cookies = [c.value for c in http.cookie_jar]
    assert session_cookies and all(c.encode() not in stack.audit.read_bytes() for c in session_cookies)


async def test_a_release_without_any_token_is_a_denial_in_the_log(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        status, body, rid = await get_resource(stack.kbs, http, "audit/release/key")
    assert (status, variant(body)) == (401, "TokenNotFound")
    [event] = events_for(stack.audit, rid)
    assert (event["outcome"], event["reason"]["type"], event["resource"]) == ("denied", "TokenNotFound", "audit/release/key")


async def test_when_the_audit_log_cannot_be_written_no_secret_leaves(stack: Stack) -> None:
    full = stack.full
    secret = b"unaudited-" + secrets.token_hex(8).encode()
    status, _ = await admin(full, stack.material, "POST", "resource/audit/full/key", data=secret)
    assert status == 500  # the change is made, but the admin is told it is not on record
    assert (await admin(full, stack.material, "POST", "resource-policy", json=policy_body(ALLOW_ALL)))[0] == 500
    async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
        await attested_session(full, http)
        status, body, rid = await get_resource(full, http, "audit/full/key")
    assert (status, variant(body)) == (500, "StorageError")
    assert "jwe" not in json.dumps(body).lower() and "ciphertext" not in body
    output = full.proc.output()
    assert "audit log write to /dev/full failed" in output and rid in output  # the event itself is in the service log
    async with aiohttp.ClientSession() as http, http.get(full.url + "/metrics") as response:
        text = await response.text()
    failures = [line for line in text.splitlines() if line.startswith("kbs_audit_write_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 4


def test_an_unwritable_audit_path_stops_the_kbs_at_start(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    text = kbs_toml(port, stack.material, tmp_path / "repo", as_port=free_port()) + '\n[audit]\npath = "/proc/version/audit.jsonl"\n'
    code, output = run_kbs_expect_exit(tmp_path, text)
    assert code == 2, output
    assert "audit.path: cannot open /proc/version/audit.jsonl" in output


async def test_admin_reads_still_work_when_the_audit_log_cannot_be_written(stack: Stack) -> None:
    status, rid = await admin(stack.full, stack.material, "GET", "resource-policy")
    assert status == 200
    assert rid in stack.full.proc.output()
