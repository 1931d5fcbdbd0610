"""The whole system: `trustee run` + `trustee guest` as real processes.

An operator sets a policy and a secret with `kbs-client`; the secret comes
back through the guest's REST API (`curl`, or aiohttp when curl is not
installed) and through `kbs-client get-resource`; and the EAR token from
`kbs-client attest` verifies with an independent JOSE library (joserfc)
against the local CA `trustee run` created, after its x5c chain is checked
with `cryptography`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from tests.procs import Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool, wait_output
from trustee_common.pki import make_ca, pem_cert

pytestmark = pytest.mark.e2e

SECRET = b"e2e secret \x00\x01\xfe"
RESOURCE = "default/test/secret"
MAX_EAR_HEADER_BYTES = 16384
#: The sealed-secret signing key `trustee guest --sealed-secret-key` trusts, fetched from the KBS.
SEALING_KID = "kbs:///default/sealed-secret/pubkey"


@dataclass
class Stack:
    server: TrusteeRun
    guest: Proc
    rest_url: str
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e")
    server = TrusteeRun(base / "trustee-data", base / "trustee.log", extra=("--log-format", "json"))
    rest, aa, cdh = free_ports(3)
    try:
        guest = Proc([script("trustee"), "guest", "--kbs-url", server.url, "--rest-port", str(rest), "--aa-port", str(aa),
                      "--cdh-port", str(cdh), "--data-dir", str(base / "trustee-guest"), "--sealed-secret-key", SEALING_KID],
                     base / "guest.log", port=rest, env=clean_env(), timeout=120)
    except BaseException:
        server.stop()
        raise
    yield Stack(server, guest, f"http://127.0.0.1:{rest}", base)
    guest.stop()
    server.stop()


def admin(stack: Stack, *args: str) -> None:
    result = run_tool("kbs-client", "--url", stack.server.url, "config", "--admin-token-file", str(stack.server.admin_token), *args)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def provisioned(stack: Stack) -> Stack:
    secret = stack.workdir / "secret.bin"
    secret.write_bytes(SECRET)
    admin(stack, "set-resource-policy", "--allow-all")
    admin(stack, "set-resource", "--path", RESOURCE, "--resource-file", str(secret))
    return stack


async def _aiohttp_get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


def fetch(url: str, out: Path) -> int:
    """GET `url` into `out` with curl when installed, else with aiohttp; returns the HTTP status."""
    if shutil.which("curl"):
        result = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", url], capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return int(result.stdout)
    status, body = asyncio.run(_aiohttp_get(url))
    out.write_bytes(body)
    return status


def test_guest_banner_names_the_curl_command(stack: Stack) -> None:
    assert f"curl {stack.rest_url}/cdh/resource/default/test/secret" in wait_output(stack.guest, "Stop with Ctrl-C.")


def test_secret_through_the_guest_rest_api(provisioned: Stack, tmp_path: Path) -> None:
    out = tmp_path / "secret"
    status = fetch(f"{provisioned.rest_url}/cdh/resource/{RESOURCE}", out)
    assert status == 200, out.read_bytes()
    assert out.read_bytes() == SECRET


def test_policy_denial_reaches_the_guest(provisioned: Stack, tmp_path: Path) -> None:
    admin(provisioned, "set-resource-policy", "--deny-all")
    try:
        out = tmp_path / "denied"
        status = fetch(f"{provisioned.rest_url}/cdh/resource/{RESOURCE}", out)
        assert status != 200
        assert SECRET not in out.read_bytes()
    finally:
        admin(provisioned, "set-resource-policy", "--allow-all")


async def _post(url: str, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return response.status, await response.read()


def test_sealed_secret_through_trustee_guest(provisioned: Stack) -> None:
    """An operator seals a vault secret with kbs-client; `trustee guest --sealed-secret-key` opens it, and only if signed by that key."""
    signing = ec.generate_private_key(ec.SECP256R1())
    key_file, pub_file = provisioned.workdir / "signing.pem", provisioned.workdir / "signing.pub.pem"
    key_file.write_bytes(signing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub_file.write_bytes(signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    admin(provisioned, "set-resource", "--path", SEALING_KID.removeprefix("kbs:///"), "--resource-file", str(pub_file))

    def seal(kid: str) -> bytes:
        result = run_tool("kbs-client", "config", "seal-secret", "--type", "vault", "--resource-uri", f"kbs:///{RESOURCE}",
                          "--signing-key", str(key_file), "--signing-kid", kid)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().encode()

    status, body = asyncio.run(_post(f"{provisioned.rest_url}/cdh/secret", seal(SEALING_KID)))
    assert (status, body) == (200, SECRET)
    status, body = asyncio.run(_post(f"{provisioned.rest_url}/cdh/secret", seal("kbs:///default/other/key")))
    assert status == 403 and SECRET not in body


def test_secret_through_kbs_client(provisioned: Stack) -> None:
    result = run_tool("kbs-client", "--url", provisioned.server.url, "get-resource", "--path", RESOURCE)
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip(), validate=True) == SECRET


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def verify_ear(token: str, ca_pem: bytes, now: datetime.datetime) -> dict[str, Any]:
    """Check the x5c chain up to `ca_pem` with cryptography, then the JWS with joserfc; returns the claims."""
    header = _b64url_json(token.split(".")[0])
    chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in header["jwk"]["x5c"]]
    root = x509.load_pem_x509_certificate(ca_pem)
    for cert, issuer in itertools.pairwise(chain):
        cert.verify_directly_issued_by(issuer)
    if chain[-1] != root:
        chain[-1].verify_directly_issued_by(root)
    for cert in chain:
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    leaf_pem = chain[0].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = ECKey.import_key(leaf_pem)
    assert {k: header["jwk"][k] for k in ("kty", "crv", "x", "y")} == {k: key.as_dict()[k] for k in ("kty", "crv", "x", "y")}
    registry = JWSRegistry(algorithms=["ES256"])
    registry.max_header_length = MAX_EAR_HEADER_BYTES  # the header carries the x5c chain
    decoded = jwt.decode(token, key, algorithms=["ES256"], registry=registry)
    jwt.JWTClaimsRegistry(exp={"essential": True}, iat={"essential": True}).validate(decoded.claims)
    return dict(decoded.claims)


@pytest.fixture(scope="module")
def ear_token(stack: Stack) -> str:
    result = run_tool("kbs-client", "--url", stack.server.url, "attest")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_ear_token_verifies_against_the_local_ca(stack: Stack, ear_token: str) -> None:
    ca_pem = (stack.server.data_dir / "as" / "ca.pem").read_bytes()
    claims = verify_ear(ear_token, ca_pem, datetime.datetime.now(datetime.UTC))
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] in ("affirming", "warning", "contraindicated", "none")
    assert "sample" in cpu0["ear.veraison.annotated-evidence"]
    assert claims["exp"] > claims["iat"]


def test_ear_token_does_not_verify_against_another_ca(ear_token: str) -> None:
    _, other_ca = make_ca("some other CA")
    with pytest.raises((InvalidSignature, ValueError, TypeError)):
        verify_ear(ear_token, pem_cert(other_ca), datetime.datetime.now(datetime.UTC))


def test_tampered_ear_token_is_rejected_by_joserfc(stack: Stack, ear_token: str) -> None:
    header, payload, signature = ear_token.split(".")
    claims = _b64url_json(payload)
    claims["submods"]["cpu0"]["ear.status"] = "affirming" if claims["submods"]["cpu0"]["ear.status"] != "affirming" else "warning"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    ca_pem = (stack.server.data_dir / "as" / "ca.pem").read_bytes()
    with pytest.raises(JoseError):
        verify_ear(f"{header}.{forged}.{signature}", ca_pem, datetime.datetime.now(datetime.UTC))


def test_trustee_run_keeps_an_audit_log_without_secrets(provisioned: Stack) -> None:
    result = run_tool("kbs-client", "--url", provisioned.server.url, "get-resource", "--path", RESOURCE)
    assert result.returncode == 0, result.stderr
    audit = provisioned.server.data_dir / "logs" / "audit.jsonl"
    assert audit.stat().st_mode & 0o777 == 0o600
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    writes = [e for e in events if e["event"] == "admin" and e["action"] == "resource.write" and e["outcome"] == "ok"
              and e["target"]["resource"] == RESOURCE]
    assert writes and writes[-1]["content"]["sha256"] == hashlib.sha256(SECRET).hexdigest()
    assert writes[-1]["who"]["role"] == "admin"
    assert any(e["event"] == "resource.release" and e["outcome"] == "released" and e["resource"] == RESOURCE for e in events)
    assert any(e["event"] == "attestation" and e["tee"] == "sample" for e in events)
    raw = audit.read_bytes()
    assert SECRET not in raw and base64.b64encode(SECRET) not in raw


def test_trustee_run_log_format_reaches_every_service(stack: Stack) -> None:
    token = stack.server.admin_token.read_text().strip()

    async def policy_change() -> str:  # an admin change logs at INFO; client errors log at DEBUG only
        headers = {"X-Request-Id": "e2e-json-log", "Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http, http.post(f"{stack.server.url}/kbs/v0/resource/default/e2e/log-check",
                                                             data=b"not a secret", headers=headers) as response:
            assert response.status == 200, await response.text()
            return response.headers["X-Request-Id"]

    assert asyncio.run(policy_change()) == "e2e-json-log"
    logs = stack.server.data_dir / "logs"
    for name, service in (("rvps", "rvps"), ("as", "grpc-as"), ("kbs", "kbs")):
        lines = [json.loads(line) for line in (logs / f"{name}.log").read_text().splitlines() if line.startswith("{")]
        assert lines and all(line["service"] == service for line in lines), name
    kbs_lines = [json.loads(line) for line in (logs / "kbs.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "e2e-json-log" for line in kbs_lines)
