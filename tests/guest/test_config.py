"""Pure parsing of the guest configs, kbc params, init-data and addresses."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from guest.attestation_agent import config as aa_config
from guest.attestation_agent.initdata import parse_init_data
from guest.cdh import config as cdh_config
from guest.cdh.image_config import ImageSettings, ProxySettings
from guest.image.config import RegistryRule
from trustee_common.addresses import grpc_target, parse_listen_address
from trustee_common.canonical import HashAlgorithm
from trustee_common.errors import ConfigError
from trustee_common.pki import make_ca, pem_cert


def test_aa_config_full_and_defaults() -> None:
    cert = pem_cert(make_ca("test")[1]).decode()
    parsed = aa_config.parse_config({
        "token_configs": {"kbs": {"url": "https://kbs:8080", "cert": cert, "tee_key_algorithm": "RSA-OAEP-256"},
                          "coco_as": {"url": "http://as:8000"}},
        "eventlog_config": {"init_pcr": 8, "enable_eventlog": True},
        "log": {"level": "debug"},
    })
    assert parsed.kbs == aa_config.KbsTokenConfig("https://kbs:8080", cert.encode(), "RSA-OAEP-256")
    assert parsed.coco_as == aa_config.CocoAsTokenConfig("http://as:8000")
    assert parsed.eventlog == aa_config.EventlogConfig(8, True)
    assert aa_config.parse_config({}) == aa_config.AaConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"token_configs": {"kbs": {}}}, "token_configs.kbs.url is required"),
        ({"token_configs": {"kbs": {"url": "kbs:8080"}}}, "token_configs.kbs.url must be an http"),
        ({"token_configs": {"kbs": {"url": "http://k", "cert": "junk"}}}, "token_configs.kbs.cert is not a PEM certificate"),
        ({"token_configs": {"other": {}}}, "unknown key(s) in config.token_configs: other"),
        ({"eventlog_config": {"enable_eventlog": "yes"}}, "eventlog_config.enable_eventlog must be bool"),
        ({"aa_kbc_params": "cc_kbc::http://k"}, "unknown key(s) in config: aa_kbc_params"),
    ],
)
def test_aa_config_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        aa_config.parse_config(data)
    assert message in info.value.detail


def test_kbc_params_from_env_then_kernel() -> None:
    assert aa_config.config_from_kbc_params("cc_kbc::http://k:1", "agent.aa_kbc_params=cc_kbc::http://x").kbs == \
        aa_config.KbsTokenConfig("http://k:1")
    assert aa_config.config_from_kbc_params(None, "quiet agent.aa_kbc_params=cc_kbc::http://x:2 ro").kbs == \
        aa_config.KbsTokenConfig("http://x:2")
    assert aa_config.config_from_kbc_params("offline_fs_kbc::", None).kbs is None
    assert aa_config.config_from_kbc_params(None, None).kbs is None
    assert cdh_config.config_from_kbc_params("cc_kbc::http://k:1", None).kbc == cdh_config.KbcConfig("http://k:1")
    with pytest.raises(ConfigError, match=r"agent\.aa_kbc_params"):
        aa_config.config_from_kbc_params(None, "agent.aa_kbc_params=cc_kbc")


def test_cdh_config() -> None:
    parsed = cdh_config.parse_config({"socket": "[::1]:5000", "kbc": {"name": "cc_kbc", "url": "http://k"},
                                      "aa": {"aa_socket": "unix:///run/aa.sock"}})
    assert parsed == cdh_config.CdhConfig("[::1]:5000", cdh_config.KbcConfig("http://k"), "unix:///run/aa.sock")
    assert cdh_config.parse_config({"image": {}}).image == ImageSettings()
    with pytest.raises(ConfigError, match="unknown key"):
        cdh_config.parse_config({"kbc": {"name": "cc_kbc", "url": "http://k", "extra": 1}})


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_init_data_digest_is_over_raw_bytes(algorithm: str) -> None:
    raw = f'version = "0.1.0"\nalgorithm = "{algorithm}"\n\n[data]\n"a" = "b"\n'.encode()
    parsed = parse_init_data(raw, "f")
    assert parsed.algorithm is HashAlgorithm(algorithm)
    assert parsed.digest == hashlib.new(algorithm, raw).digest()
    assert parsed.toml == raw.decode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'algorithm = "sha256"\n', "f.version is required"),
        (b'version = "0.1.0"\nalgorithm = ""\n', "unsupported algorithm ''"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\nextra = 1\n', "unknown key(s) in f: extra"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\ndata = 1\n', "f.data must be dict"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\nn = 1\n', "every [data] entry must be a string"),
        (b"\xff\xfe", "not a UTF-8 TOML document"),
    ],
)
def test_init_data_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_init_data(raw, "f")
    assert message in info.value.detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:50002", ("127.0.0.1", 50002)), ("[::1]:80", ("::1", 80)), ("localhost:1", ("localhost", 1)),
     ("0.0.0.0:65535", ("0.0.0.0", 65535))],
)
def test_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text, "f") == expected


@pytest.mark.parametrize("text", ["", "50002", ":50002", "host:", "host:0", "host:65536", "::1:80", "[nope]:1", "a b:1", "h:1x"])
def test_listen_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^f: "):
        parse_listen_address(text, "f")


def test_grpc_target() -> None:
    assert grpc_target("[::1]:50002", "f") == "[::1]:50002"
    assert grpc_target("unix:///run/aa.sock", "f") == "unix:///run/aa.sock"


UPSTREAM_IMAGE_TABLE = """
[image]
work_dir = "/run/image"
max_concurrent_layer_downloads_per_image = 5
authenticated_registry_credentials_uri = "kbs:///default/credential/test"
registry_configuration_uri = "file:///etc/containers/registries.conf"
extra_root_certificates = []
anonymous_fallback_on_unauthorized = true
decryption_keys = ["kbs:///default/image-key/jwe"]

[image.registry_config]
unqualified-search-registries = ["docker.io"]

[[image.registry_config.registry]]
prefix = "example.com/banned"
blocked = true

[[image.registry_config.registry]]
prefix = "example.com/foo"
location = "internal-registry-for-example.com/bar"

[[image.registry_config.registry]]
location = "127.0.0.1:5000"
insecure = true

[image.image_pull_proxy]
https_proxy = "http://proxy:3128"
no_proxy = "registry.internal"
"""


def test_cdh_image_table_with_upstream_keys() -> None:
    image = cdh_config.parse_config(tomllib.loads(UPSTREAM_IMAGE_TABLE)).image
    assert (image.work_dir, image.max_concurrent_layer_downloads_per_image) == ("/run/image", 5)
    assert image.authenticated_registry_credentials_uri == "kbs:///default/credential/test"
    assert image.registry_configuration_uri == "file:///etc/containers/registries.conf"
    assert image.anonymous_fallback_on_unauthorized and image.decryption_keys == ("kbs:///default/image-key/jwe",)
    assert image.proxy == ProxySettings(https_proxy="http://proxy:3128", no_proxy="registry.internal")
    assert image.registry_config == (RegistryRule("example.com/banned", blocked=True),
                                     RegistryRule("example.com/foo", "internal-registry-for-example.com/bar"),
                                     RegistryRule("127.0.0.1:5000", "127.0.0.1:5000", insecure=True))


@pytest.mark.parametrize(("table", "message"), [
    ({"image_security_policy_uri": "kbs:///a/b/c"}, "image.image_security_policy_uri: image signature verification is not implemented"),
    ({"sigstore_config": "x"}, "image.sigstore_config: image signature verification"),
    ({"work_dir": "relative"}, "image.work_dir: 'relative' is not an absolute path"),
    ({"max_concurrent_layer_downloads_per_image": 0}, "must be >= 1"),
    ({"max_concurrent_layer_downloads_per_image": 1000}, "is over 32"),
    ({"authenticated_registry_credentials_uri": "http://x/auth.json"}, "neither a kbs:///... resource URI nor a file:///"),
    ({"decryption_keys": ["http:///a/b/c"]}, "image.decryption_keys: resource URI"),
    ({"extra_root_certificates": ["not pem"]}, r"extra_root_certificates\[0\]: not a PEM certificate"),
    ({"image_pull_proxy": {"https_proxy": "socks5://p"}}, "https_proxy: 'socks5://p' is not an http"),
    ({"registry_config": {"registry": [{"insecure": True}]}}, "needs a prefix or a location"),
    ({"registry_config": {"registry": [{"prefix": "*.example.com"}]}}, "has a wildcard and no location"),
    ({"registry_config": {"registry": [{"location": "r", "mirror": [{"location": "m"}]}]}}, "mirrors are not supported"),
    ({"registry_config": {"unqualified-search-registries": ["quay.io"]}}, "other than docker.io are not supported"),
    ({"registry_config": {"registries": []}}, "unknown key"),
    ({"kbs_uri": "x"}, "unknown key"),
])
def test_cdh_image_table_rejects(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cdh_config.parse_config({"image": table})
