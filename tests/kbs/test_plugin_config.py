"""`[[plugins]]` parsing for the `pkcs11` and `external` plugins (no process, no HSM): upstream's keys and our rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbs.config import ExternalPluginConfig, Pkcs11PluginConfig, parse_kbs_config
from trustee_common.errors import ConfigError

BASE: dict[str, Any] = {
    "http_server": {"insecure_http": True},
    "admin": {"authorization_mode": "DenyAll"},
    "attestation_token": {"insecure_header_jwk": True},
}


def parse(plugin: dict[str, Any], tmp_path: Path) -> Any:
    return parse_kbs_config({**BASE, "plugins": [plugin]}, default_dir=tmp_path)


def test_pkcs11_upstream_keys_and_defaults(tmp_path: Path) -> None:
    config = parse({"name": "pkcs11", "module": "/lib/p11.so", "pin": "1234"}, tmp_path)
    assert config.plugins == (Pkcs11PluginConfig(Path("/lib/p11.so"), 0, "1234", None, None, "RsaPkcsOaep", ""),)
    assert "1234" not in repr(config.plugins[0])
    full = parse({"name": "pkcs11", "module": "/m.so", "slot_index": 2, "pin_env": "HSM_PIN", "rsa_mechanism": "RsaPkcsTest",
                  "lookup_label": "wrap"}, tmp_path)
    assert full.plugins == (Pkcs11PluginConfig(Path("/m.so"), 2, None, None, "HSM_PIN", "RsaPkcsTest", "wrap"),)


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "set exactly one of pin, pin_file and pin_env"),
    ({"pin": "1", "pin_file": "/p"}, "set exactly one of pin, pin_file and pin_env"),
    ({"pin": "1", "rsa_mechanism": "RsaPkcs"}, "rsa_mechanism 'RsaPkcs' is not one of RsaPkcsOaep, RsaPkcsTest"),
    ({"pin": "1", "slot_index": 256}, "slot_index must be 0..255"),
    ({"pin": "1", "slot_index": -1}, "slot_index must be >= 0"),
    ({"pin": "1", "label": "x"}, "unknown key(s) in config.plugins[0]: label"),
])
def test_pkcs11_refusals(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"name": "pkcs11", "module": "/m.so", **extra}, tmp_path)
    assert message in raised.value.detail


def test_pkcs11_needs_a_module(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="module is required"):
        parse({"name": "pkcs11", "pin": "1"}, tmp_path)


def test_external_backends(tmp_path: Path) -> None:
    config = parse({"name": "external", "backends": [
        {"name": "a", "endpoint": "http://127.0.0.1:50051", "timeout_ms": 5000, "tls_mode": "insecure"},
        {"name": "b", "endpoint": "https://plugin.example:50052", "ca_cert_path": "/ca.pem"},
    ]}, tmp_path)
    (plugin,) = config.plugins
    assert isinstance(plugin, ExternalPluginConfig)
    assert [(b.name, b.target, b.tls, b.timeout_ms, b.ca_cert_path) for b in plugin.backends] == [
        ("a", "127.0.0.1:50051", False, 5000, None), ("b", "plugin.example:50052", True, None, Path("/ca.pem"))]


def test_external_ca_on_plaintext_is_ignored_with_a_warning(tmp_path: Path) -> None:
    config = parse({"name": "external", "backends": [{"name": "a", "endpoint": "http://127.0.0.1:1", "ca_cert_path": "/ca"}]},
                   tmp_path)
    assert config.plugins[0].backends[0].ca_cert_path is None
    assert any("ca_cert_path: ignored for the plaintext endpoint" in w for w in config.warnings)


def test_external_tls_mode_must_match_the_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_mode 'tls' contradicts the endpoint's scheme http://"):
        parse({"name": "external", "backends": [{"name": "a", "endpoint": "http://127.0.0.1:1", "tls_mode": "tls"}]}, tmp_path)


def test_each_plugin_once_and_unknown_names_refused(tmp_path: Path) -> None:
    entry = {"name": "pkcs11", "module": "/m.so", "pin": "1"}
    with pytest.raises(ConfigError, match="the pkcs11 plugin is configured twice"):
        parse_kbs_config({**BASE, "plugins": [entry, entry]}, default_dir=tmp_path)
    with pytest.raises(ConfigError, match="plugin 'nebula-ca' is not supported here"):
        parse({"name": "nebula-ca"}, tmp_path)
    with pytest.raises(ConfigError, match="plugin 'mine' is not supported"):
        parse({"name": "mine"}, tmp_path)
