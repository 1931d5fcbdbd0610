"""Registry auth against a real registry behind a small authenticating front (a real aiohttp server).

The front answers `/v2/...` with 401 and a Bearer (or Basic) challenge until
the request carries the right credential, then relays manifests from the real
docker-registry and redirects blob downloads to it (another origin, so the
puller must follow the redirect and not send its token there). The token
service checks basic credentials from the docker `auths` config.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from guest.image.config import ImageConfig, Platform, RegistryRule, parse_credentials
from guest.image.pull import pull_image
from tests.image_pull.test_pull import EXPECTED, LAYERS
from tests.oci_layouts import Registry, build_layout, skopeo_push, tree
from tests.ports import LOOPBACK, allocate_ports
from trustee_common.errors import UpstreamError

TOKEN = "tok-123"
USER, PASSWORD = "alice", "s3cret"


@dataclass
class Front:
    registry: Registry
    scheme: str = "bearer"
    host: str = ""
    hop_host: str = ""
    token_requests: list[dict[str, str]] = field(default_factory=list)
    hop_authorizations: list[str | None] = field(default_factory=list)
    reject_everything: bool = False

    def expected_authorization(self) -> str:
        if self.scheme == "bearer":
            return f"Bearer {TOKEN}"
        return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def challenge(self, name: str) -> str:
        if self.scheme == "bearer":
            return f'Bearer realm="http://{self.host}/token",service="front",scope="repository:{name}:pull"'
        return 'Basic realm="front"'

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.query))
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != basic:
            return web.Response(status=401)
        return web.json_response({"token": TOKEN, "expires_in": 300})

    async def hop(self, request: web.Request) -> web.Response:
        """Another origin on the way to the blob: it must not see the registry's credential."""
        self.hop_authorizations.append(request.headers.get("Authorization"))
        raise web.HTTPFound(f"http://{self.registry.host}{request.path.removeprefix('/hop')}")

    async def v2(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if self.reject_everything or request.headers.get("Authorization") != self.expected_authorization():
            return web.Response(status=401, headers={"WWW-Authenticate": self.challenge(name)},
                                text=json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}))
        upstream = f"http://{self.registry.host}{request.path}"
        if request.match_info["kind"] == "blobs":
            raise web.HTTPTemporaryRedirect(f"http://{self.hop_host}/hop{request.path}")
        async with aiohttp.ClientSession() as session, session.get(
                upstream, headers={"Accept": request.headers.get("Accept", "")}) as answer:
            body = await answer.read()
            headers = {k: v for k, v in answer.headers.items() if k in ("Content-Type", "Docker-Content-Digest")}
            return web.Response(status=answer.status, body=body, headers=headers)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    layout = build_layout(tmp_path_factory.mktemp("layout"), LAYERS)
    skopeo_push(layout.ref, reg, "private/app")
    yield reg
    reg.stop()


@pytest.fixture
async def front(registry: Registry) -> AsyncIterator[Front]:
    state = Front(registry)
    app = web.Application()
    app.router.add_get("/token", state.token)
    app.router.add_get(r"/v2/{name:.+}/{kind:manifests|blobs}/{ref}", state.v2)
    app.router.add_get(r"/hop/{rest:.+}", state.hop)
    runner = web.AppRunner(app)
    await runner.setup()
    port, hop_port = allocate_ports(2)
    await web.TCPSite(runner, LOOPBACK, port).start()
    await web.TCPSite(runner, LOOPBACK, hop_port).start()
    state.host, state.hop_host = f"{LOOPBACK}:{port}", f"{LOOPBACK}:{hop_port}"
    yield state
    await runner.cleanup()


def config_for(front: Front, user: str = USER, password: str = PASSWORD) -> ImageConfig:
    auths = {"auths": {front.host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    return ImageConfig(registry_rules=(RegistryRule(front.host, insecure=True),),
                       credentials=parse_credentials(json.dumps(auths).encode()), platform=Platform("linux", "amd64"))


async def test_bearer_token_is_fetched_once_and_reused(front: Front, tmp_path: Path) -> None:
    await pull_image(f"{front.host}/private/app:latest", tmp_path / "bundle", config=config_for(front), decrypt=None)
    assert tree(tmp_path / "bundle" / "rootfs") == EXPECTED
    assert front.token_requests == [{"service": "front", "scope": "repository:private/app:pull"}]
    assert front.hop_authorizations == [None] * 4, "config and three layers, no token sent to another origin"


async def test_basic_challenge(front: Front, tmp_path: Path) -> None:
    front.scheme = "basic"
    await pull_image(f"{front.host}/private/app", tmp_path / "bundle", config=config_for(front), decrypt=None)
    assert tree(tmp_path / "bundle" / "rootfs") == EXPECTED
    assert front.token_requests == []


async def test_wrong_password(front: Front, tmp_path: Path) -> None:
    with pytest.raises(UpstreamError, match=r"token service .* answered HTTP 401"):
        await pull_image(f"{front.host}/private/app", tmp_path / "bundle", config=config_for(front, password="wrong"),
                         decrypt=None)
    assert list((tmp_path / "bundle").iterdir()) == []


async def test_no_credentials_for_basic(front: Front, tmp_path: Path) -> None:
    front.scheme = "basic"
    config = ImageConfig(registry_rules=(RegistryRule(front.host, insecure=True),))
    with pytest.raises(UpstreamError, match="requires authentication"):
        await pull_image(f"{front.host}/private/app", tmp_path / "bundle", config=config, decrypt=None)


async def test_401_after_authenticating(front: Front, tmp_path: Path) -> None:
    front.reject_everything = True
    with pytest.raises(UpstreamError, match="refused the credentials"):
        await pull_image(f"{front.host}/private/app", tmp_path / "bundle", config=config_for(front), decrypt=None)
    assert len(front.token_requests) == 1
