"""Resource release with Bearer (passport) tokens: verification, policy, JWE, ordering.

Tokens are minted here with the AS signing key and certificate chain that
the KBS trusts (and with other keys for the negative cases); the KBS
verifies them exactly as it verifies tokens from the real AS.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

import aiohttp
import pytest
from kbs_client import policies as kbs_client_policies

from tests.kbs.helpers import (
    ALLOW_ALL,
    Kbs,
    Material,
    bad_tee_keys,
    ear_claims,
    load_signing,
    mint_token,
    policy_body,
    untrusted_signing,
    variant,
)
from trustee_common.b64 import url_decode, url_encode
from trustee_common.epoch import CLAIM as EPOCH_CLAIM
from trustee_common.jose import KEY_ALGORITHMS, TeeKeyPair


async def admin_post(http: aiohttp.ClientSession, kbs: Kbs, material: Material, path: str, **kwargs: Any) -> None:
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    async with http.post(kbs.api(path), headers=headers, **kwargs) as response:
        assert response.status == 200, await response.text()


async def set_policy(http: aiohttp.ClientSession, kbs: Kbs, material: Material, text: str) -> None:
    await admin_post(http, kbs, material, "resource-policy", json=policy_body(text))


async def get_with(http: aiohttp.ClientSession, kbs: Kbs, path: str, token: str) -> tuple[int, Any]:
    async with http.get(kbs.api(path), headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


def good_token(material: Material, key: TeeKeyPair, tee: str = "tdx", **claims: Any) -> str:
    signing_key, chain = load_signing(material)
    return mint_token(ear_claims(tee, key.public_jwk(), **claims), signing_key, chain=chain)


@pytest.mark.parametrize("algorithm", [*KEY_ALGORITHMS, "RSA1_5"])
async def test_release_decrypts_for_each_tee_key_type(http: aiohttp.ClientSession, kbs: Kbs, material: Material, algorithm: str) -> None:
    await set_policy(http, kbs, material, ALLOW_ALL)
    secret = f"secret for {algorithm}".encode()
    await admin_post(http, kbs, material, "resource/keys/jwe/" + algorithm.replace("+", "_"), data=secret)
    key = TeeKeyPair.generate(algorithm)
    status, envelope = await get_with(http, kbs, "resource/keys/jwe/" + algorithm.replace("+", "_"), good_token(material, key))
    assert status == 200, envelope
    assert set(envelope) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    header = json.loads(url_decode(envelope["protected"], "protected"))
    assert header["enc"] == "A256GCM" and header["alg"] == key.alg
    assert key.decrypt(envelope) == secret


DEFAULT_POLICIES = {
    "kbs-builtin": importlib.resources.files("kbs").joinpath("policies/default.rego").read_text(),
    "kbs-client-default": kbs_client_policies.DEFAULT,
}


@pytest.mark.parametrize("policy", sorted(DEFAULT_POLICIES))
async def test_default_policy_needs_a_real_tee_and_a_status_other_than_contraindicated(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, policy: str
) -> None:
    # Before issue 9 the default released to any non-sample TEE whatever its status (a contraindicated TPM included).
    await set_policy(http, kbs, material, DEFAULT_POLICIES[policy])
    await admin_post(http, kbs, material, "resource/default/key/one", data=b"v1")
    key = TeeKeyPair.generate()
    signing_key, chain = load_signing(material)
    gpu_only = ear_claims("sampledevice", key.public_jwk())
    gpu_only["submods"] = {"gpu0": gpu_only["submods"].pop("cpu0")}
    cases = [
        (good_token(material, key, tee="tdx", status="affirming"), 200),
        (good_token(material, key, tee="tpm", status="warning"), 200),
        (good_token(material, key, tee="tdx", status="contraindicated"), 403),
        (good_token(material, key, tee="tpm", status="contraindicated"), 403),
        (good_token(material, key, tee="sample", status="affirming"), 403),
    ]
    for token, expected in cases:
        status, body = await get_with(http, kbs, "resource/default/key/one", token)
        assert status == expected, (policy, body)
        if status == 200:
            assert key.decrypt(body) == b"v1"
        else:
            assert variant(body) == "PolicyDeny"
    # No cpu0 at all (a device-only token): refused before the policy (the TEE key lives under cpu0).
    status, body = await get_with(http, kbs, "resource/default/key/one", mint_token(gpu_only, signing_key, chain=chain))
    assert status == 401 and "v1" not in json.dumps(body)


def test_kbs_client_default_is_the_kbs_builtin_rule() -> None:
    rules = [text[text.index("allow if"):].split() for text in DEFAULT_POLICIES.values()]
    assert rules[0] == rules[1]


@pytest.mark.parametrize("name", ["rsa-512-zero-padded", "rsa-e-1", "rsa-e-2"])
async def test_token_with_an_unusable_tee_key_is_refused_with_4xx(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, name: str
) -> None:
    # Before issue 9: 500 JweError at release for these keys.
    await set_policy(http, kbs, material, ALLOW_ALL)
    await admin_post(http, kbs, material, "resource/default/key/bad", data=b"v1")
    jwk, words = bad_tee_keys()[name]
    signing_key, chain = load_signing(material)
    status, body = await get_with(http, kbs, "resource/default/key/bad", mint_token(ear_claims("tdx", jwk), signing_key, chain=chain))
    assert 400 <= status < 500 and words in body["detail"], body


async def test_policy_is_evaluated_before_the_lookup(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    await set_policy(http, kbs, material, 'package policy\ndefault allow = false\nallow if { data["resource-path"] == "open/a/b" }\n')
    key = TeeKeyPair.generate()
    token = good_token(material, key)
    status, body = await get_with(http, kbs, "resource/missing/no/thing", token)
    assert (status, variant(body)) == (403, "PolicyDeny")
    status, body = await get_with(http, kbs, "resource/open/a/b", token)
    assert (status, variant(body)) == (404, "ResourceNotFound")


async def test_policy_sees_path_string_query_and_cpu_alias(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    policy = """package policy
default allow = false
allow if {
    data.plugin == "resource"
    data["resource-path"] == "one/two/three"
    data.query.v == "1"
    input.submods.cpu["ear.status"] == "affirming"
}
"""
    await set_policy(http, kbs, material, policy)
    await admin_post(http, kbs, material, "resource/one/two/three", data=b"123")
    key = TeeKeyPair.generate()
    status, body = await get_with(http, kbs, "resource/one/two/three?v=1", good_token(material, key))
    assert status == 200 and key.decrypt(body) == b"123"
    for path, token in [
        ("resource/one/two/three?v=2", good_token(material, key)),
        ("resource/one/two/three", good_token(material, key)),
        ("resource/one/two/three?v=1", good_token(material, key, status="contraindicated")),
    ]:
        status, body = await get_with(http, kbs, path, token)
        assert (status, variant(body)) == (403, "PolicyDeny"), path


def _forged_tokens(material: Material, key: TeeKeyPair) -> dict[str, str]:
    signing_key, chain = load_signing(material)
    other_key, other_chain = untrusted_signing()
    claims = ear_claims("tdx", key.public_jwk())
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    valid = mint_token(claims, signing_key, chain=chain)
    header, _, signature = valid.split(".")
    tampered = url_encode(json.dumps({**claims, "exp": claims["exp"] + 3600}).encode())
    return {
        "untrusted chain": mint_token(claims, other_key, chain=other_chain),
        "signed by another key": mint_token(claims, other_key, header_key=signing_key, chain=chain),
        "header key differs from x5c[0]": mint_token(claims, other_key, chain=chain),
        "no x5c": mint_token(claims, signing_key),
        "expired": mint_token(ear_claims("tdx", key.public_jwk(), exp_in=-120), signing_key, chain=chain),
        "no exp": mint_token(no_exp, signing_key, chain=chain),
        "tampered payload": f"{header}.{tampered}.{signature}",
        "garbage": "not-a-token",
        "no TEE key": mint_token(ear_claims("tdx", None), signing_key, chain=chain),
    }


async def test_bad_tokens_are_refused(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    await set_policy(http, kbs, material, ALLOW_ALL)
    await admin_post(http, kbs, material, "resource/default/key/t", data=b"x")
    key = TeeKeyPair.generate()
    for name, token in _forged_tokens(material, key).items():
        status, body = await get_with(http, kbs, "resource/default/key/t", token)
        assert (status, variant(body)) == (401, "TokenVerifierError"), name
    # Within the 60 s leeway an expired token is still accepted.
    signing_key, chain = load_signing(material)
    recent = mint_token(ear_claims("tdx", key.public_jwk(), exp_in=-20), signing_key, chain=chain)
    status, _ = await get_with(http, kbs, "resource/default/key/t", recent)
    assert status == 200


async def test_missing_token_is_401(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer "}):
        async with http.get(kbs.api("resource/default/key/t"), headers=headers) as response:
            assert response.status == 401
            assert variant(await response.json()) == "TokenNotFound"


async def test_authed_but_unattested_session_is_not_a_token(http: aiohttp.ClientSession, kbs: Kbs) -> None:
    async with http.post(kbs.api("auth"), json={"version": "0.4.0", "tee": "sample", "extra-params": ""}) as response:
        assert response.status == 200
    async with http.get(kbs.api("resource/default/key/t")) as response:  # the jar sends the cookie
        assert response.status == 401
        assert variant(await response.json()) == "TokenNotFound"


async def test_epoch_token_fails_closed_without_the_as_and_epochless_token_is_bounded_by_exp(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material
) -> None:
    """This KBS's AS is not running: it cannot learn the current appraisal epoch (docs/token-freshness.md)."""
    await set_policy(http, kbs, material, ALLOW_ALL)
    await admin_post(http, kbs, material, "resource/fresh/epoch/key", data=b"epoch secret")
    key = TeeKeyPair.generate()
    signing_key, chain = load_signing(material)
    claims = ear_claims("tdx", key.public_jwk())
    stamped = mint_token({**claims, EPOCH_CLAIM: "p:1.rv:2"}, signing_key, chain=chain)
    status, body = await get_with(http, kbs, "resource/fresh/epoch/key", stamped)
    assert (status, variant(body)) == (503, "UpstreamUnavailable"), body
    status, body = await get_with(http, kbs, "resource/fresh/epoch/key", mint_token(claims, signing_key, chain=chain))
    assert status == 200, body
    assert key.decrypt(body) == b"epoch secret"
