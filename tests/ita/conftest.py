"""The stand-in Intel Trust Authority (tests/ita_standin.py) over HTTPS, and KBS processes configured for it.

The stand-in and every KBS run as real processes on loopback. The KBS
trusts the stand-in's test CA through `SSL_CERT_FILE` (the system trust
store's override), so its configuration is what a real deployment uses
(`https://` base_url and certs_file), with `jwks_refresh_interval_seconds
= 0` unless a test is about the bound.
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kbs.helpers import Kbs, start_kbs
from tests.procs import Proc, free_port
from tests.tdx.corpus import V4
from trustee_common.pki import issue_leaf, make_ca, pem_cert, pem_private_key

API_KEY = "test-api-key-3f9c1d0e"
WORKTREE = Path(__file__).parents[2]
DEFAULTS: dict[str, Any] = {"enforce_binding": False, "unmatched": [], "lifetime": 300, "issued_offset": 0,
                            "unpublished": False, "alg": "PS384", "ignore_must_match": False}


@dataclass
class StandIn:
    proc: Proc
    port: int
    ca_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    directory = tmp_path_factory.mktemp("ita-standin")
    ca_key, ca_cert = make_ca("stand-in ITA TLS CA")
    key, cert = issue_leaf(ca_key, ca_cert, "127.0.0.1", ip_addresses=("127.0.0.1",))
    (directory / "ca.pem").write_bytes(pem_cert(ca_cert))
    (directory / "tls.pem").write_bytes(pem_cert(cert))
    (directory / "tls.key").write_bytes(pem_private_key(key))
    assert V4.collateral_path is not None and V4.time is not None
    port = free_port()
    args = [sys.executable, "-m", "tests.ita_standin", "--port", str(port), "--tls-cert", str(directory / "tls.pem"),
            "--tls-key", str(directory / "tls.key"), "--api-key", API_KEY, "--collateral", str(V4.collateral_path),
            "--verification-time", V4.time]
    proc = Proc(args, directory / "standin.log", port=port, cwd=WORKTREE)
    yield StandIn(proc, port, directory / "ca.pem")
    proc.stop()


async def control(standin: StandIn, path: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as session:
        method = session.get if body is None else session.post
        kwargs: dict[str, Any] = {"ssl": standin.ssl()}
        if body is not None:
            kwargs["json"] = body
        async with method(f"{standin.url}/test/{path}", **kwargs) as response:
            assert response.status == 200, await response.text()
            return await response.json()


@pytest.fixture
async def reset(standin: StandIn) -> AsyncIterator[StandIn]:
    """The stand-in with its default behaviour (binding not enforced: a corpus quote cannot bind a fresh key)."""
    await control(standin, "config", DEFAULTS)
    yield standin
    await control(standin, "config", DEFAULTS)


def ita_config(port: int, repo: Path, standin_url: str, *, api_key: str = API_KEY, certs: str | None = None,
               extra: str = "", token: str = "") -> str:
    return f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "DenyAll"

[attestation_token]
{token}

[attestation_service]
type = "intel_ta"
base_url = "{standin_url}"
api_key = "{api_key}"
certs_file = "{certs if certs is not None else standin_url + '/certs'}"
jwks_refresh_interval_seconds = 0
{extra}

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "{repo}"
"""


SECRET = b"released through Intel Trust Authority"


def start(directory: Path, config: str, standin: StandIn, port: int) -> Kbs:
    repo = directory / "repo"
    (repo / "default" / "key").mkdir(parents=True, exist_ok=True)
    (repo / "default" / "key" / "1").write_bytes(SECRET)
    return start_kbs(directory, config, port, env={"SSL_CERT_FILE": str(standin.ca_file)})


@pytest.fixture(scope="session")
def ita_kbs(tmp_path_factory: pytest.TempPathFactory, standin: StandIn) -> Iterator[Kbs]:
    directory = tmp_path_factory.mktemp("kbs-ita")
    port = free_port()
    server = start(directory, ita_config(port, directory / "repo", standin.url), standin, port)
    yield server
    server.proc.stop()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return value
