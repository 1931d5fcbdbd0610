"""Admin authorization matrix against real `kbs`, `grpc-as` and `rvps` processes.

Every admin endpoint of the KBS endpoint table, times every forged or
insufficient token: the expected status and error detail, and for a
refused write, proof that nothing changed. One module-scoped stack serves
the whole matrix; the identity providers are an Ed25519 PEM key (with
issuer and audience), an RSA PEM key and a JWK set (EC and RSA keys by
`kid`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk

from kbs.config import parse_kbs_config
from kbs.http import admin_handlers
from kbs.http.app import BUILTIN_ENDPOINTS, RESOURCE_ENDPOINTS
from kbs.server import load_admin
from tests.kbs import admin_tokens as t
from tests.kbs.helpers import (
    ALLOW_ALL,
    Kbs,
    Material,
    ear_claims,
    kbs_toml,
    load_signing,
    policy_body,
    run_kbs_expect_exit,
    start_backend,
    start_kbs,
    variant,
)
from tests.procs import free_port, script
from trustee_common.b64 import std_encode, url_encode
from trustee_common.errors import ConfigError
from trustee_common.jose import TeeKeyPair

OUTSIDER_ACL = "^/kbs/v0/(?!(resource|resource-policy|attestation-policy|reference-value)(/|$)).*$"
ATTESTATION_POLICY = b"package policy\nimport rego.v1\ntrust_claims := {}\n"



def kbs_config(port: int, as_port: int, keys: t.Keys, material: Material, repo: Path) -> str:
    return f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [
  {{ public_key_uri = "file://{keys.ed_public}", issuer = "{t.ISSUER}", audience = "{t.AUDIENCE}" }},
  {{ public_key_uri = "{keys.rsa_public}", issuer = "{t.RSA_ISSUER}" }},
  {{ jwk_set_uri = "file://{keys.jwks}", issuer = "{t.JWKS_ISSUER}", audience = "{t.AUDIENCE}" }},
]
[admin.authorization.regex_acl]
acls = [
  {{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$" }},
  {{ role = "readonly", allowed_endpoints = "^/kbs/v0/.*$", allowed_methods = ["GET"] }},
  {{ role = "writeonly", allowed_endpoints = "^/kbs/v0/.*$", allowed_methods = ["POST", "DELETE"] }},
  {{ role = "outsider", allowed_endpoints = "{OUTSIDER_ACL}" }},
  {{ role = "public-writer", allowed_endpoints = "^/kbs/v0/resource/(?!private/).*$" }},
]

[attestation_token]
trusted_certs_paths = ["{material.ca_cert}"]

[attestation_service]
as_addr = "http://127.0.0.1:{as_port}"

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "{repo}"
"""


@dataclass
class Stack:
    kbs: Kbs
    keys: t.Keys
    material: Material


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("admin-matrix")
    keys = t.make_keys(root / "keys")
    port = free_port()
    backend = start_backend(root, material)
    procs, as_port = backend.procs, backend.as_port  # the KBS processes are added: stop() ends them all
    try:
        kbs = start_kbs(root / "kbs", kbs_config(port, as_port, keys, material, root / "kbs" / "repo"), port)
        procs.append(kbs.proc)
        yield Stack(kbs, keys, material)
    finally:
        backend.stop()


async def send(kbs: Kbs, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    """`path` is sent exactly as written (no re-encoding by the client)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    url = yarl.URL(f"{kbs.url}/kbs/v0/{path}", encoded=True)
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, **kwargs) as response:
        text = await response.read()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text


def valid(stack: Stack, role: str = "admin") -> str:
    return t.sign(stack.keys.ed, "EdDSA", t.claims(role))


def rv_message(name: str) -> dict[str, str]:
    return {"version": "0.1.0", "type": "sample", "payload": std_encode(json.dumps({name: ["v"]}).encode())}


# --- the admin endpoints: how to call each, seed it, and observe what a write changed ---

Snapshot = Callable[[Stack, str], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    plugin: str
    path: Callable[[str], str]
    body: Callable[[str], Any]
    seed: Callable[[Stack, str], Awaitable[None]] | None
    snapshot: Snapshot | None  # None: reads only (or nothing observable through the KBS)
    wrong_method_role: str


async def _seed_resource(stack: Stack, name: str) -> None:
    assert (await send(stack.kbs, "POST", f"resource/matrix/{name}/x", valid(stack), b"seeded"))[0] == 200


async def _resource_file(stack: Stack, name: str) -> bytes | None:
    target = stack.kbs.repo / "matrix" / name / "x"
    return target.read_bytes() if target.exists() else None


async def _policy(stack: Stack, _name: str) -> Any:
    return (await send(stack.kbs, "GET", "resource-policy", valid(stack)))[1]


async def _seed_rv(stack: Stack, name: str) -> None:
    assert (await send(stack.kbs, "POST", "reference-value", valid(stack), rv_message(f"m-{name}")))[0] == 200


async def _rv(stack: Stack, name: str) -> Any:
    return await send(stack.kbs, "GET", f"reference-value/m-{name}", valid(stack))


def _no_body(_name: str) -> None:
    return None


def _resource_path(name: str) -> str:
    return f"resource/matrix/{name}/x"


def _fixed(path: str) -> Callable[[str], str]:
    return lambda _name: path


def _resource_policy_body(name: str) -> Any:
    return policy_body(f"package policy\ndefault allow = false\n# {name}\n")


def _attestation_policy_body(name: str) -> Any:
    return {"policy_id": f"m_{name}", "policy": url_encode(ATTESTATION_POLICY)}


def _rv_body(name: str) -> Any:
    return rv_message(f"m-{name}")


ENDPOINTS = {
    "POST resource": Endpoint("POST", "resource", _resource_path, str.encode, None, _resource_file, "readonly"),
    "DELETE resource": Endpoint("DELETE", "resource", _resource_path, _no_body, _seed_resource, _resource_file, "readonly"),
    "GET resource-policy": Endpoint("GET", "resource-policy", _fixed("resource-policy"), _no_body, None, None, "writeonly"),
    "POST resource-policy": Endpoint(
        "POST", "resource-policy", _fixed("resource-policy"), _resource_policy_body, None, _policy, "readonly"
    ),
    "POST attestation-policy": Endpoint(
        "POST", "attestation-policy", _fixed("attestation-policy"), _attestation_policy_body, None, None, "readonly"
    ),
    "POST reference-value": Endpoint("POST", "reference-value", _fixed("reference-value"), _rv_body, None, _rv, "readonly"),
    "GET reference-value": Endpoint("GET", "reference-value", lambda n: f"reference-value/m-{n}", _no_body, _seed_rv, None, "writeonly"),
}

UNAUTHENTICATED = {
    "no token": "no admin bearer token",
    "expired": "token has expired",
    "future nbf": "token is not valid yet",
    "future iat": "issued in the future",
    "wrong issuer": "issuer does not match",
    "wrong audience": "audience does not match",
    "other key": "Cannot verify token with any of the issuers",
    "alg none": "not a compact JWS",
    "alg none with signature": "Cannot verify token with any of the issuers",
    "HS256 with the public key PEM": "Cannot verify token with any of the issuers",
    "HS256 with the RSA public key PEM": "Cannot verify token with any of the issuers",
    "RS256 header on the Ed25519 key": "Cannot verify token with any of the issuers",
    "exp NaN": "non-finite number",
    "exp Infinity": "non-finite number",
    "exp 1e400": "non-finite number",
    "exp true": "exp claim is not a number",
    "exp string": "exp claim is not a number",
    "exp past year 9999": "exp claim is out of range",
    "no exp": "token has no exp claim",
    "duplicate exp": "repeats a member name",
}
FORBIDDEN = {"wrong role": "Role guest not allowed", "wrong method": "not allowed for", "encoded path": "Role outsider not allowed"}
CASES = [*UNAUTHENTICATED, *FORBIDDEN, "valid"]


def test_the_matrix_covers_every_admin_endpoint() -> None:
    table = {**{(m, p): h for p, methods in BUILTIN_ENDPOINTS.items() for m, h in methods.items()}}
    table.update({(m, "resource"): h for m, h in RESOURCE_ENDPOINTS.items()})
    admin = {f"{m} {p}" for (m, p), h in table.items() if h.__module__ == admin_handlers.__name__}
    assert admin == set(ENDPOINTS)


def _request(stack: Stack, endpoint: Endpoint, case: str, name: str) -> tuple[str, str | None]:
    path = endpoint.path(name)
    if case == "encoded path":  # first letter of the plugin percent-encoded: the outsider ACL's lookahead must still see it
        return f"%{ord(path[0]):02X}{path[1:]}", valid(stack, "outsider")
    return path, t.token_cases(stack.keys, endpoint.wrong_method_role)[case]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("endpoint_name", list(ENDPOINTS))
async def test_admin_matrix(stack: Stack, endpoint_name: str, case: str) -> None:
    endpoint = ENDPOINTS[endpoint_name]
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{endpoint_name}-{case}").strip("-")
    if endpoint.seed is not None:
        await endpoint.seed(stack, name)
    before = None if endpoint.snapshot is None else await endpoint.snapshot(stack, name)
    path, token = _request(stack, endpoint, case, name)
    status, reply = await send(stack.kbs, endpoint.method, path, token, endpoint.body(name))
    after = None if endpoint.snapshot is None else await endpoint.snapshot(stack, name)
    if case == "valid":
        assert status == 200, reply
        assert endpoint.snapshot is None or after != before
        return
    expected_status, expected_detail = (401, UNAUTHENTICATED[case]) if case in UNAUTHENTICATED else (403, FORBIDDEN[case])
    assert (status, variant(reply)) == (expected_status, "AdminAuthAccess"), reply
    assert expected_detail in reply["detail"], reply
    assert after == before, "a refused write changed the KBS state"


async def test_issue_example_encoded_private_prefix(stack: Stack) -> None:
    """A role allowed `^/kbs/v0/resource/(?!private/).*$` cannot write `private/` in any spelling."""
    writer = valid(stack, "public-writer")
    repo = stack.kbs.repo
    assert (await send(stack.kbs, "POST", "resource/public/key/x", writer, b"ok"))[0] == 200
    for path in ("resource/%70rivate/key/x", "resource/private/key/x", "resource/%70%72%69%76%61%74%65/key/x"):
        status, reply = await send(stack.kbs, "POST", path, writer, b"stolen")
        assert (status, variant(reply)) == (403, "AdminAuthAccess"), path
    malformed = ("resource/public/%2e%2e/private/x", "resource/public/../private/x", "resource/private%2Fkey/x", "resource/pub/key/x%3Fy")
    for path in malformed:
        status, reply = await send(stack.kbs, "POST", path, writer, b"stolen")
        assert (status, variant(reply)) == (400, "MalformedRequest"), path
    assert not (repo / "private").exists()
    assert (repo / "public" / "key" / "x").read_bytes() == b"ok"


async def test_query_string_cannot_dodge_an_exclusion(stack: Stack) -> None:
    """The target is the path without the query: `?x` cannot slip past a lookahead ACL."""
    for path in ("resource-policy?x=1", "resource-policy?", "resource-policy?/x"):
        status, reply = await send(stack.kbs, "GET", path, valid(stack, "outsider"))
        assert (status, variant(reply)) == (403, "AdminAuthAccess"), path
    status, _ = await send(stack.kbs, "GET", "resource-policy?x=1", valid(stack))
    assert status == 200


def _jwks_claims() -> dict[str, Any]:
    return t.claims(iss=t.JWKS_ISSUER)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ec-1 ES256", 200),
        ("rsa-1 RS256", 200),
        ("no kid", 401),
        ("unknown kid", 401),
        ("ec-1 kid, RSA signature", 401),
        ("rsa-1 kid, PS256 (JWK says RS256)", 401),
        ("rsa-1 kid, ES256 by the EC key", 401),
        ("HS256 with the JWK set file", 401),
        ("ec-1 ES256, wrong issuer", 401),
    ],
)
async def test_jwks_provider_picks_the_key_by_kid(stack: Stack, name: str, status: int) -> None:
    keys, body = stack.keys, _jwks_claims()
    tokens = {
        "ec-1 ES256": t.sign(keys.jwks_ec, "ES256", body, kid="ec-1"),
        "rsa-1 RS256": t.sign(keys.jwks_rsa, "RS256", body, kid="rsa-1"),
        "no kid": t.sign(keys.jwks_ec, "ES256", body),
        "unknown kid": t.sign(keys.jwks_ec, "ES256", body, kid="ec-2"),
        "ec-1 kid, RSA signature": t.sign(keys.jwks_rsa, "RS256", body, kid="ec-1"),
        "rsa-1 kid, PS256 (JWK says RS256)": t.sign(keys.jwks_rsa, "PS256", body, kid="rsa-1"),
        "rsa-1 kid, ES256 by the EC key": t.sign(keys.jwks_ec, "ES256", body, kid="rsa-1"),
        "HS256 with the JWK set file": t.hs256_with(keys.jwks.read_bytes(), body),
        "ec-1 ES256, wrong issuer": t.sign(keys.jwks_ec, "ES256", t.claims(iss="other"), kid="ec-1"),
    }
    got, reply = await send(stack.kbs, "GET", "resource-policy", tokens[name])
    assert got == status, reply


@pytest.mark.parametrize(("alg", "status"), [("RS256", 200), ("PS256", 200), ("RS512", 200), ("ES256", 401), ("EdDSA", 401)])
async def test_rsa_pem_provider_accepts_rsa_algorithms_only(stack: Stack, alg: str, status: int) -> None:
    body = t.claims(iss=t.RSA_ISSUER, aud=None)
    key: t.PrivateKey = stack.keys.rsa
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        token = t.swap_header(t.sign(key, alg, body), {"alg": "ES256", "typ": "JWT"})
    elif alg == "EdDSA":
        token = t.swap_header(t.sign(stack.keys.rsa, "RS256", body), {"alg": "EdDSA", "typ": "JWT"})
    else:
        token = t.sign(key, alg, body)
    got, reply = await send(stack.kbs, "GET", "resource-policy", token)
    assert got == status, reply


def test_kbs_client_signs_with_an_rsa_key(stack: Stack, tmp_path: Path) -> None:
    key = str(stack.keys.rsa_private)
    args = [script("kbs-client"), "--url", stack.kbs.url, "config", "--auth-private-key", key, "get-resource-policy"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ), timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    assert "package policy" in result.stdout
    weak = tmp_path / "weak.key"
    weak.write_bytes(t.private_pem(rsa.generate_private_key(65537, 1024)))  # noqa: S505 (the point: refused)
    args[args.index(key)] = str(weak)
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ), timeout=90, check=False)
    assert result.returncode != 0
    assert "2048" in result.stderr


# --- EAR attestation tokens share the time-claim checks ---


def _ear(stack: Stack, key: TeeKeyPair, payload: str) -> str:
    signing_key, chain = load_signing(stack.material)
    header_jwk: dict[str, Any] = json.loads(jwk.JWK.from_pyca(signing_key.public_key()).export_public())
    header_jwk.update(alg="ES256", x5c=[std_encode(c.public_bytes(serialization.Encoding.DER)) for c in chain])
    return t.sign_raw(signing_key, payload, "ES256", jwk=header_jwk)


@pytest.mark.parametrize(
    "exp",
    [
        *("NaN", "Infinity", "-Infinity", "1e400", "true", '"4102444800"', "null", "1" + "0" * 30),
        '1, "exp": 4102444800',  # a duplicate member: Python keeps the last, other parsers the first
        *("valid", "nbf future", "iat future"),
    ],
)
async def test_ear_token_time_claims(stack: Stack, exp: str) -> None:
    admin = valid(stack)
    assert (await send(stack.kbs, "POST", "resource-policy", admin, policy_body(ALLOW_ALL)))[0] == 200
    assert (await send(stack.kbs, "POST", "resource/default/ear/t", admin, b"secret"))[0] == 200
    key = TeeKeyPair.generate()
    body = ear_claims("tdx", key.public_jwk())
    now = int(time.time())
    if exp == "valid":
        payload = json.dumps(body)
    elif exp == "nbf future":
        payload = json.dumps({**body, "nbf": now + 600})
    elif exp == "iat future":
        payload = json.dumps({**body, "iat": now + 600})
    else:
        payload = t.with_raw_exp(body, exp)
    status, reply = await send(stack.kbs, "GET", "resource/default/ear/t", _ear(stack, key, payload))
    if exp == "valid":
        assert status == 200, reply
    else:
        assert (status, variant(reply)) == (401, "TokenVerifierError"), reply


# --- identity-provider and ACL configuration that must be refused at start ---


def _config_with(material: Material, tmp_path: Path, provider: str = "", acl: str = "") -> str:
    text = kbs_toml(free_port(), material, tmp_path / "repo", as_port=free_port())
    if provider:
        text = text.replace(f'{{ public_key_uri = "file://{material.admin_public}" }}', provider)
    if acl:
        text = text.replace('{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$" }', acl)
    return text


@pytest.mark.parametrize(
    ("provider", "acl", "expected"),
    [
        ('{ jwk_set_uri = "https://idp.example/jwks" }', "", "https:// is not supported"),
        ("", '{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$", allowed_methods = ["get"] }', "allowed_methods must be"),
    ],
)
def test_kbs_refuses_to_start(tmp_path: Path, material: Material, provider: str, acl: str, expected: str) -> None:
    code, output = run_kbs_expect_exit(tmp_path, _config_with(material, tmp_path, provider, acl))
    assert code == 2, output
    assert expected in output and "Traceback" not in output


NAN_JWKS = b'{"keys": [], "x": NaN}'


def _jwks_file(tmp_path: Path, entry: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [entry]}))
    return path


def _ec_jwk(**extra: Any) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwk.JWK.from_pyca(ec.generate_private_key(ec.SECP256R1()).public_key()).export_public())
    public.pop("kid", None)  # jwcrypto names keys by thumbprint
    return {**public, **extra}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: f'{{ public_key_uri = "{d / "none.pem"}", issuer = "x" }}', "cannot read"),
        (lambda d: '{ issuer = "x" }', "public_key_uri and/or jwk_set_uri"),
        (lambda d: '{ public_key_uri = "https://idp.example/key.pem" }', "https:// is not supported"),
        (lambda d: f'{{ public_key_uri = "{_write(d / "weak.pem", t.public_pem(rsa.generate_private_key(65537, 1024)))}" }}', "2048"),  # noqa: S505
        (lambda d: f'{{ jwk_set_uri = "{_jwks_file(d, {"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"})}" }}', "symmetric"),
        (lambda d: f'{{ jwk_set_uri = "{_jwks_file(d, _ec_jwk(kid="a"))}" }}', "kid and alg"),
        (lambda d: f'{{ jwk_set_uri = "{_jwks_file(d, _ec_jwk(alg="ES256"))}" }}', "kid and alg"),
        (lambda d: f'{{ jwk_set_uri = "{_jwks_file(d, _ec_jwk(kid="a", alg="RS256"))}" }}', "does not fit"),
        (lambda d: f'{{ jwk_set_uri = "{_jwks_file(d, _ec_jwk(kid="a", alg="ES256", use="enc"))}" }}', "not a signature key"),
        (lambda d: f'{{ jwk_set_uri = "{_write(d / "j.json", NAN_JWKS)}" }}', "JWK set"),
    ],
)
def test_bad_identity_providers_are_config_errors(tmp_path: Path, material: Material, make: Callable[[Path], str], expected: str) -> None:
    text = _config_with(material, tmp_path, make(tmp_path))
    with pytest.raises(ConfigError) as raised:
        load_admin(parse_kbs_config(tomllib.loads(text), default_dir=tmp_path).admin)
    assert expected in raised.value.detail


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
