"""Image references, registry rules, credentials and WWW-Authenticate parsing (pure parts of the puller)."""

from __future__ import annotations

import base64
import json

import pytest

from guest.cdh.image_config import parse_registry_config
from guest.image.config import ImageConfig, Platform, RegistryRule, parse_credentials
from guest.image.reference import ImageReference, parse_reference
from guest.image.registry import choose_platform, parse_challenge
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, ImageNotFoundError, MalformedRequestError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("nginx", ImageReference("docker.io", "library/nginx", "latest")),
    ("nginx:1.25", ImageReference("docker.io", "library/nginx", "1.25")),
    ("library/nginx", ImageReference("docker.io", "library/nginx", "latest")),
    ("index.docker.io/foo/bar", ImageReference("docker.io", "foo/bar", "latest")),
    ("quay.io/org/app:v1", ImageReference("quay.io", "org/app", "v1")),
    ("localhost/app", ImageReference("localhost", "app", "latest")),
    ("127.0.0.1:5000/a/b/c:t_1.x-y", ImageReference("127.0.0.1:5000", "a/b/c", "t_1.x-y")),
    (f"ghcr.io/x/y@{DIGEST}", ImageReference("ghcr.io", "x/y", None, DIGEST)),
    (f"ghcr.io/x/y:v2@{DIGEST}", ImageReference("ghcr.io", "x/y", "v2", DIGEST)),
    ("[::1]:5000/app", ImageReference("[::1]:5000", "app", "latest")),
    ("my.reg/a__b/c-d/e.f", ImageReference("my.reg", "a__b/c-d/e.f", "latest")),
])
def test_parse(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


def test_docker_hub_api_host_and_fetch_reference() -> None:
    ref = parse_reference("nginx")
    assert ref.api_host == "registry-1.docker.io"
    assert str(ref) == "docker.io/library/nginx:latest"
    pinned = parse_reference(f"ghcr.io/x/y:v2@{DIGEST}")
    assert pinned.reference == DIGEST


@pytest.mark.parametrize("text", [
    "", "Nginx", "upper/Case", "a b", "nginx:", "nginx:-bad", "x/../y", "host:5000/", "a//b", "a/b@sha256:zz",
    "a/b@md5:" + "0" * 32, "a" * 600, "r.io/a:" + "t" * 129, "r.io/" + "a" * 256, "r.io/é", "r.io/a_", "-r.io/a",
])
def test_bad_references(text: str) -> None:
    with pytest.raises(MalformedRequestError):
        parse_reference(text)


def test_registry_rules_insecure_block_remap() -> None:
    rules = parse_registry_config(ConfigTable({"registry": [
        {"location": "127.0.0.1:5000", "insecure": True},
        {"prefix": "example.com/banned", "blocked": True},
        {"prefix": "example.com/foo", "location": "internal.example/bar"},
    ]}, "registry_config"))
    config = ImageConfig(registry_rules=rules)
    assert config.resolve(parse_reference("127.0.0.1:5000/app:1")) == (parse_reference("127.0.0.1:5000/app:1"), True)
    assert config.resolve(parse_reference("127.0.0.2:5000/app"))[1] is False
    assert config.resolve(parse_reference("127.0.0.1:50001/app"))[1] is False
    with pytest.raises(MalformedRequestError, match="blocked"):
        config.resolve(parse_reference("example.com/banned/img"))
    assert config.resolve(parse_reference("example.com/banned-not/img"))[1] is False
    remapped, insecure = config.resolve(parse_reference("example.com/foo/img:v1"))
    assert (str(remapped), insecure) == ("internal.example/bar/img:v1", False)


def test_loopback_is_not_insecure_by_default() -> None:
    assert ImageConfig().resolve(parse_reference("127.0.0.1:5000/app"))[1] is False
    assert ImageConfig().resolve(parse_reference("localhost/app"))[1] is False


@pytest.mark.parametrize("table", [
    {"registry": [{"prefix": "a.io", "mirror": [{"location": "m.io"}]}]},
    {"unqualified-search-registries": ["quay.io"]},
    {"registry": [{}]},
    {"registry": [{"location": "a.io", "insecure": "yes"}]},
    {"registry": [{"location": "a.io", "colour": "red"}]},
])
def test_bad_registry_config(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        parse_registry_config(ConfigTable(table, "registry_config"))


def test_credentials_docker_auths() -> None:
    doc = {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"alice:pa:ss").decode()},
                     "https://index.docker.io/v1/": {"auth": base64.b64encode(b"bob:pw").decode()},
                     "quay.io": {"username": "carol", "password": "x"}}}
    creds = parse_credentials(json.dumps(doc).encode())
    config = ImageConfig(credentials=creds)
    alice = config.credentials_for("127.0.0.1:5000")
    assert alice is not None and (alice.username, alice.password) == ("alice", "pa:ss")
    bob = config.credentials_for("docker.io")
    assert bob is not None and bob.username == "bob"
    assert config.credentials_for("quay.io") is not None
    assert config.credentials_for("ghcr.io") is None
    for bad in (b"{}", b"[]", b'{"auths": {"h": {"auth": "!!"}}}', b'{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}'):
        with pytest.raises(ConfigError):
            parse_credentials(bad)


def test_www_authenticate() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:library/nginx:pull"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge('Bearer realm=http://x/t, error="insufficient_scope"')[1] == {
        "realm": "http://x/t", "error": "insufficient_scope"}
    assert parse_challenge('Bearer realm="a\\"b"')[1] == {"realm": 'a"b'}
    assert parse_challenge("") == ("", {})


def _entry(arch: str, variant: str | None = None, os_name: str = "linux") -> dict[str, object]:
    platform: dict[str, str] = {"os": os_name, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + arch[0] * 64,
            "size": 1, "platform": platform}


def test_choose_platform() -> None:
    index = {"manifests": [_entry("arm64", "v8"), _entry("amd64", os_name="windows"), _entry("amd64")]}
    assert choose_platform(index, Platform("linux", "amd64")).raw["platform"] == {"os": "linux", "architecture": "amd64"}
    assert choose_platform(index, Platform("linux", "arm64", "v8")).digest.startswith("sha256:a")
    with pytest.raises(ImageNotFoundError, match="linux/s390x"):
        choose_platform(index, Platform("linux", "s390x"))
    assert Platform.current().os == "linux"


def test_config_bounds() -> None:
    with pytest.raises(ConfigError):
        ImageConfig(max_concurrent_layer_downloads_per_image=0)
    assert RegistryRule("*.example.com").matches("a.example.com/x") == len("a.example.com")


def test_proxy_for_honours_scheme_and_no_proxy() -> None:
    from guest.image.config import proxy_for

    config = ImageConfig(https_proxy="http://p:3128", http_proxy="http://q:3128", no_proxy="registry.internal, .corp.example,10.0.0.5")
    assert proxy_for(config, "https", "quay.io") == "http://p:3128"
    assert proxy_for(config, "http", "quay.io") == "http://q:3128"
    assert proxy_for(config, "https", "registry.internal") is None
    assert proxy_for(config, "https", "a.corp.example") is None and proxy_for(config, "https", "corp.example") is None
    assert proxy_for(config, "https", "10.0.0.5") is None
    assert proxy_for(config, "https", "notcorp.example") == "http://p:3128"
    assert proxy_for(ImageConfig(https_proxy="http://p:3128", no_proxy="*"), "https", "quay.io") is None
    assert proxy_for(ImageConfig(), "https", "quay.io") is None
