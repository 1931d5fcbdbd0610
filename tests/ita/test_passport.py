"""Passport mode: `[attestation_token] trusted_jwk_sets` verifies `Authorization: Bearer` tokens by `kid`.

The KBS (its AS at a closed port: no attestation happens here) trusts the
stand-in ITA's `/certs` over HTTPS and, alongside, our own AS's EAR tokens
through `trusted_certs_paths`. Tokens are minted by the stand-in with its
own RSA key (as ITA signs them) and carry the TEE key the KBS encrypts the
resource to, in ITA's v1 (flat) or v2 (nested) layout.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ita.conftest import SECRET, StandIn, control, start
from tests.kbs.helpers import Kbs, Material, ear_claims, load_signing, make_material, mint_token, run_kbs_expect_exit
from tests.procs import free_port
from trustee_common.jose import TeeKeyPair

pytestmark = pytest.mark.e2e


def passport_config(port: int, repo: Path, standin: StandIn, material: Material) -> str:
    return f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "DenyAll"

[attestation_token]
trusted_jwk_sets = ["{standin.url}"]
trusted_certs_paths = ["{material.ca_cert}"]
jwks_refresh_interval_seconds = 0

[attestation_service]
type = "coco_as_grpc"
as_addr = "http://127.0.0.1:{free_port()}"

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "{repo}"
"""


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("passport-material"))


@pytest.fixture(scope="module")
def passport_kbs(tmp_path_factory: pytest.TempPathFactory, standin: StandIn, material: Material) -> Iterator[Kbs]:
    """certs_file-style source: the portal base URL, found through OpenID discovery as upstream does."""
    directory = tmp_path_factory.mktemp("kbs-passport")
    port = free_port()
    server = start(directory, passport_config(port, directory / "repo", standin, material), standin, port)
    yield server
    server.proc.stop()


def ita_claims(key: TeeKeyPair, *, layout: str = "v2", exp_in: int = 300) -> dict[str, Any]:
    now = int(time.time())
    tdx = {"tdx_mrtd": "ab" * 48, "tdx_is_debuggable": False, "attester_tcb_status": "UpToDate",
           "attester_runtime_data": {"nonce": "n", "tee-pubkey": key.public_jwk()}}
    base = {"iss": "Intel Trust Authority", "iat": now, "nbf": now, "exp": now + exp_in}
    if layout == "v2":
        return {**base, "ver": "2.0.0", "tdx": tdx}
    return {**base, "ver": "1.0.0", "attester_type": "TDX", **tdx}


async def mint(standin: StandIn, claims: dict[str, Any]) -> str:
    token: str = (await control(standin, "mint", claims))["token"]
    return token


async def get(kbs: Kbs, token: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(kbs.api("resource/default/key/1"), headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("layout", ["v1", "v2"])
async def test_ita_token_accepted(reset: StandIn, passport_kbs: Kbs, layout: str) -> None:
    key = TeeKeyPair.generate()
    status, envelope = await get(passport_kbs, await mint(reset, ita_claims(key, layout=layout)))
    assert status == 200, envelope
    assert key.decrypt(envelope) == SECRET


async def test_own_ear_token_still_accepted(reset: StandIn, passport_kbs: Kbs, material: Material) -> None:
    key = TeeKeyPair.generate()
    signing, chain = load_signing(material)
    token = mint_token(ear_claims("tdx", key.public_jwk()), signing, chain=chain)
    status, envelope = await get(passport_kbs, token)
    assert status == 200, envelope
    assert key.decrypt(envelope) == SECRET


def forge(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tdx"]["tdx_mrtd"] = "cd" * 48
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


async def test_forged_expired_unknown_kid_refused(reset: StandIn, passport_kbs: Kbs) -> None:
    key = TeeKeyPair.generate()
    good = await mint(reset, ita_claims(key))
    expired = await mint(reset, ita_claims(key, exp_in=-600))
    await control(reset, "config", {"unpublished": True})
    unknown = await mint(reset, ita_claims(key))
    for token in (forge(good), expired, unknown):
        status, reply = await get(passport_kbs, token)
        assert status == 401, reply
        assert reply["type"].endswith("TokenVerifierError")
    log = passport_kbs.proc.log.read_text(errors="replace")
    assert "token signature does not verify" in log and "token has expired" in log and "no trusted JWK has kid" in log


async def test_debug_td_contraindicated(reset: StandIn, passport_kbs: Kbs) -> None:
    """The EAR view: a debuggable TD is contraindicated, so the default resource policy refuses it."""
    key = TeeKeyPair.generate()
    claims = ita_claims(key)
    claims["tdx"]["tdx_is_debuggable"] = True
    status, reply = await get(passport_kbs, await mint(reset, claims))
    assert status == 403, reply


def test_unreadable_jwk_set_stops_start(tmp_path: Path, standin: StandIn, material: Material) -> None:
    text = passport_config(free_port(), tmp_path / "repo", standin, material).replace(
        f'trusted_jwk_sets = ["{standin.url}"]', f'trusted_jwk_sets = ["{tmp_path / "missing.json"}"]')
    code, output = run_kbs_expect_exit(tmp_path, text)
    assert code == 2, output
    assert "attestation_token.trusted_jwk_sets" in output and "cannot read" in output and "Traceback" not in output
