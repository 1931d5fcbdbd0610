"""Admin API against a real `kbs`: authentication, ACL, resources, policies, limits."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kbs.helpers import ALLOW_ALL, DENY_ALL, Kbs, Material, ear_claims, load_signing, mint_token, policy_body, variant
from trustee_common.admin_token import mint_admin_token
from trustee_common.b64 import url_decode, url_encode

# (method, path, body) of every admin endpoint; bodies are valid.
ADMIN_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "resource/adm/key/x", b"data"),
    ("DELETE", "resource/adm/key/x", None),
    ("GET", "resource-policy", None),
    ("POST", "resource-policy", policy_body(ALLOW_ALL)),
    ("POST", "attestation-policy", {"policy_id": "default_cpu", "policy": url_encode(b"package policy\n")}),
    ("POST", "reference-value", {"version": "0.1.0", "type": "sample", "payload": "e30="}),
    ("GET", "reference-value/some/id", None),
]


async def call(
    http: aiohttp.ClientSession, kbs: Kbs, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    async with http.request(method, kbs.api(path), headers=headers, **kwargs) as response:
        text = await response.read()
        return response.status, (None if not text else _json_or_text(text))


def _json_or_text(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def bad_admin_tokens(material: Material) -> dict[str, str]:
    signing_key, chain = load_signing(material)
    return {
        "unknown key": mint_admin_token(material.other_admin_private),
        "expired": material.admin_token(now=time.time() - 600, lifetime_seconds=60),
        "no role": material.admin_token(extra_claims={"role": None}),
        "garbage": "a.b.c",
        "EAR token": mint_token(ear_claims("tdx", None), signing_key, chain=chain),
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS)
async def test_admin_endpoints_need_a_valid_admin_token(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, method: str, path: str, body: Any
) -> None:
    status, reply = await call(http, kbs, method, path, body)
    assert (status, variant(reply)) == (401, "AdminAuthAccess")
    for name, token in bad_admin_tokens(material).items():
        status, reply = await call(http, kbs, method, path, body, token)
        assert (status, variant(reply)) == (401, "AdminAuthAccess"), name
    status, reply = await call(http, kbs, method, path, body, material.admin_token(role="guest"))
    assert (status, variant(reply)) == (403, "AdminAuthAccess")
    assert "Role guest not allowed" in reply["detail"]


async def test_acl_is_matched_per_endpoint(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    reader = material.admin_token(role="reader")
    status, reply = await call(http, kbs, "GET", "resource-policy", token=reader)
    assert status == 200 and "policy" in reply
    status, reply = await call(http, kbs, "POST", "resource/adm/key/y", b"x", reader)
    assert (status, variant(reply)) == (403, "AdminAuthAccess")
    status, reply = await call(http, kbs, "GET", "resource-policy?x=1", token=reader)  # the ACL target has no query
    assert status == 200 and "policy" in reply


async def test_resource_write_overwrite_delete(http: aiohttp.ClientSession, kbs: Kbs, material: Material, repo: Path) -> None:
    token = material.admin_token()
    assert (await call(http, kbs, "POST", "resource/rw/key/a", b"\x00first", token))[0] == 200
    assert (repo / "rw" / "key" / "a").read_bytes() == b"\x00first"
    assert (await call(http, kbs, "POST", "resource/rw/key/a", b"second", token))[0] == 200
    assert (repo / "rw" / "key" / "a").read_bytes() == b"second"
    assert (await call(http, kbs, "DELETE", "resource/rw/key/a", None, token))[0] == 200
    assert not (repo / "rw" / "key" / "a").exists()
    status, reply = await call(http, kbs, "DELETE", "resource/rw/key/a", None, token)
    assert (status, variant(reply)) == (404, "ResourceNotFound")
    status, reply = await call(http, kbs, "POST", "resource/rw/..key/a", b"x", token)
    assert (status, variant(reply)) == (400, "MalformedRequest")


async def test_resource_policy_roundtrip_and_invalid_policy_keeps_the_old(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material
) -> None:
    token = material.admin_token()
    assert (await call(http, kbs, "POST", "resource-policy", policy_body(DENY_ALL), token))[0] == 200
    status, reply = await call(http, kbs, "GET", "resource-policy", token=token)
    assert status == 200 and url_decode(reply["policy"], "policy").decode() == DENY_ALL
    status, reply = await call(http, kbs, "POST", "resource-policy", policy_body("package policy\nallow if {"), token)
    assert (status, variant(reply)) == (400, "PolicyEngineError")
    padded = {"policy": base64.urlsafe_b64encode(b"package policy\nx := 1\n").decode()}
    assert padded["policy"].endswith("=")
    bad_bodies: list[Any] = [padded, {"policy": "!!"}, {"policy": ALLOW_ALL, "extra": 1}, {}, [], b"{oops"]
    bad_bodies.append({"policy": url_encode(b"\xff\xfe")})
    for body in bad_bodies:
        status, reply = await call(http, kbs, "POST", "resource-policy", body, token)
        assert (status, variant(reply)) == (400, "MalformedRequest"), body
    status, reply = await call(http, kbs, "GET", "resource-policy", token=token)
    assert url_decode(reply["policy"], "policy").decode() == DENY_ALL


@pytest.mark.parametrize(
    "body",
    [
        {"policy": url_encode(b"package policy\n")},
        {"policy_id": "default_cpu"},
        {"policy_id": "default_cpu", "policy": "not base64!"},
        {"policy_id": "../x", "policy": url_encode(b"package policy\n")},
        {"policy_id": "default_cpu", "policy": url_encode(b"package policy\n"), "type": "opa"},
        {"policy_id": "default_cpu", "policy": url_encode(b"package policy\n"), "unknown": 1},
        b"not json",
    ],
)
async def test_attestation_policy_body_is_checked_before_forwarding(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, body: Any
) -> None:
    status, reply = await call(http, kbs, "POST", "attestation-policy", body, material.admin_token())
    assert (status, variant(reply)) == (400, "MalformedRequest")


async def test_forwarding_with_attestation_service_down_is_503(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    token = material.admin_token()
    for method, path, body in ADMIN_ENDPOINTS[4:]:
        status, reply = await call(http, kbs, method, path, body, token)
        assert (status, variant(reply)) == (503, "UpstreamUnavailable"), path


async def test_reference_value_inputs(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    token = material.admin_token()
    for body in (b"not json", b"[1, 2]", b"\xff\xfe"):
        status, reply = await call(http, kbs, "POST", "reference-value", body, token)
        assert (status, variant(reply)) == (400, "MalformedRequest"), body
    status, reply = await call(http, kbs, "GET", "reference-value/", token=token)
    assert (status, variant(reply)) == (400, "MalformedRequest")


async def test_payload_over_the_limit_is_413_json(http: aiohttp.ClientSession, kbs: Kbs, material: Material, repo: Path) -> None:
    token = material.admin_token()
    limit = 1024 * 1024  # the shared KBS runs with payload_request_size = 1
    assert (await call(http, kbs, "POST", "resource/big/blob/ok", b"a" * limit, token))[0] == 200
    status, reply = await call(http, kbs, "POST", "resource/big/blob/too", b"a" * (limit + 1), token)
    assert (status, variant(reply)) == (413, "PayloadTooLarge")
    assert not (repo / "big" / "blob" / "too").exists()
    status, reply = await call(http, kbs, "POST", "auth", b" " * (limit + 1))
    assert (status, variant(reply)) == (413, "PayloadTooLarge")
