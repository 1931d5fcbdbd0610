"""The CDH's `[image]` table: how `PullImage` reaches registries and opens encrypted layers.

Upstream's keys (image-rs `ImageConfig`), as the CDH reads them:

```toml
[image]
work_dir = "/run/kata-containers/image"          # downloads and unpacking happen here
max_concurrent_layer_downloads_per_image = 3
authenticated_registry_credentials_uri = "kbs:///default/credential/test"   # or file:///path
registry_configuration_uri = "kbs:///default/registry-config/test"          # or file:///path
extra_root_certificates = ["-----BEGIN CERTIFICATE-----..."]
anonymous_fallback_on_unauthorized = false
[image.registry_config]                          # containers-registries.conf, inline
unqualified-search-registries = ["docker.io"]
[[image.registry_config.registry]]
location = "registry.internal:5000"
insecure = true                                  # plain HTTP to this registry
[image.image_pull_proxy]
https_proxy = "http://proxy:3128"
http_proxy = "http://proxy:3128"
no_proxy = "registry.internal"
```

and one of ours:

```toml
decryption_keys = ["kbs:///default/image-key/jwe-private"]
```

`decryption_keys` lists KBS resources holding private keys (PEM or JWK)
for layers encrypted to JWE recipients (`skopeo copy --encryption-key
jwe:pub.pem`): the CDH fetches them through the attested KBS path when a
layer has no key-provider packet it can open. Layers wrapped for the
`attestation-agent` key provider (`trustee image encrypt`) need no entry:
their packet names its key-encryption key.

Image signature verification (`image_security_policy_uri`,
`image_security_policy`, `sigstore_config_uri`, `sigstore_config`) is not
implemented; those keys are refused rather than ignored, so no operator
believes images are verified when they are not. This module only parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from guest.image.config import RegistryRule
from guest.image.reference import DOCKER_HUB
from guest.resource_uri import ResourceUri
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, TrusteeError

DEFAULT_WORK_DIR = "/run/kata-containers/image"
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3
MAX_CONCURRENT_DOWNLOADS = 32
MAX_DECRYPTION_KEYS = 16
MAX_ROOT_CERTIFICATES = 64
MAX_REGISTRY_RULES = 256
UNSUPPORTED_KEYS = ("image_security_policy_uri", "image_security_policy", "sigstore_config_uri", "sigstore_config")


@dataclass(frozen=True)
class ProxySettings:
    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None


@dataclass(frozen=True)
class ImageSettings:
    """The `[image]` table as written (URIs are fetched when the CDH starts)."""

    work_dir: str = DEFAULT_WORK_DIR
    max_concurrent_layer_downloads_per_image: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    authenticated_registry_credentials_uri: str | None = None
    registry_configuration_uri: str | None = None
    #: The rules of the inline `[image.registry_config]` table, or None.
    registry_config: tuple[RegistryRule, ...] | None = None
    extra_root_certificates: tuple[str, ...] = ()
    anonymous_fallback_on_unauthorized: bool = False
    proxy: ProxySettings = field(default_factory=ProxySettings)
    decryption_keys: tuple[str, ...] = ()


def parse_image_table(table: ConfigTable) -> ImageSettings:
    for key in UNSUPPORTED_KEYS:
        if table.has(key):
            raise ConfigError(f"image.{key}: image signature verification is not implemented by this CDH; "
                              "remove the key (it is refused so that no image is taken as verified)")
    work_dir = table.string("work_dir", DEFAULT_WORK_DIR) or DEFAULT_WORK_DIR
    if not PurePosixPath(work_dir).is_absolute():
        raise ConfigError(f"image.work_dir: {work_dir!r} is not an absolute path")
    downloads = table.integer("max_concurrent_layer_downloads_per_image", DEFAULT_MAX_CONCURRENT_DOWNLOADS, minimum=1)
    if downloads > MAX_CONCURRENT_DOWNLOADS:
        raise ConfigError(f"image.max_concurrent_layer_downloads_per_image: {downloads} is over {MAX_CONCURRENT_DOWNLOADS}")
    settings = ImageSettings(
        work_dir=work_dir,
        max_concurrent_layer_downloads_per_image=downloads,
        authenticated_registry_credentials_uri=_uri(table, "authenticated_registry_credentials_uri"),
        registry_configuration_uri=_uri(table, "registry_configuration_uri"),
        registry_config=_registry_config(table),
        extra_root_certificates=_certificates(table),
        anonymous_fallback_on_unauthorized=table.boolean("anonymous_fallback_on_unauthorized", False),
        proxy=_proxy(table),
        decryption_keys=_decryption_keys(table),
    )
    table.finish()
    return settings


def _uri(table: ConfigTable, key: str) -> str | None:
    """A `kbs:///` resource URI or a `file:///` absolute path, checked."""
    value = table.string(key)
    if value is None or value == "":
        return None
    if value.startswith("kbs://"):
        try:
            ResourceUri.parse(value)
        except TrusteeError as exc:
            raise ConfigError(f"image.{key}: {exc.detail}") from None
    elif not value.startswith("file:///"):
        raise ConfigError(f"image.{key}: {value!r} is neither a kbs:///... resource URI nor a file:///... path")
    return value


def _registry_config(table: ConfigTable) -> tuple[RegistryRule, ...] | None:
    if not table.has("registry_config"):
        return None
    return parse_registry_config(table.table("registry_config"))


def parse_registry_config(table: ConfigTable) -> tuple[RegistryRule, ...]:
    """The rules of a containers-registries.conf document (inline, or fetched from `registry_configuration_uri`).

    The subset image-rs reads, minus what this puller does not do: mirrors and
    unqualified search registries other than docker.io are refused.
    """
    search = table.strings("unqualified-search-registries", [DOCKER_HUB])
    if search not in ([DOCKER_HUB], []):
        raise ConfigError(f"{table.where}.unqualified-search-registries: registries other than {DOCKER_HUB} are not supported")
    entries = table.tables("registry")
    if len(entries) > MAX_REGISTRY_RULES:
        raise ConfigError(f"{table.where}: more than {MAX_REGISTRY_RULES} [[registry]] entries")
    rules = tuple(_registry_rule(rule) for rule in entries)
    table.finish()
    return rules


def _registry_rule(table: ConfigTable) -> RegistryRule:
    location = table.string("location", "") or ""
    prefix = table.string("prefix", "") or location
    if not prefix:
        raise ConfigError(f"{table.where}: a [[registry]] needs a prefix or a location")
    if prefix.startswith("*.") and not location:
        raise ConfigError(f"{table.where}: prefix {prefix!r} has a wildcard and no location")
    if table.has("mirror"):
        raise ConfigError(f"{table.where}.mirror: registry mirrors are not supported")
    rule = RegistryRule(prefix, location, table.boolean("insecure", False), table.boolean("blocked", False))
    table.finish()
    return rule


def _certificates(table: ConfigTable) -> tuple[str, ...]:
    certs = table.strings("extra_root_certificates")
    if len(certs) > MAX_ROOT_CERTIFICATES:
        raise ConfigError(f"image.extra_root_certificates: more than {MAX_ROOT_CERTIFICATES} certificates")
    for index, pem in enumerate(certs):
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"image.extra_root_certificates[{index}]: not a PEM certificate")
    return tuple(certs)


def _proxy(table: ConfigTable) -> ProxySettings:
    if not table.has("image_pull_proxy"):
        return ProxySettings()
    proxy = table.table("image_pull_proxy")
    settings = ProxySettings(proxy.string("https_proxy") or None, proxy.string("http_proxy") or None, proxy.string("no_proxy") or None)
    proxy.finish()
    for key, value in (("https_proxy", settings.https_proxy), ("http_proxy", settings.http_proxy)):
        if value is not None and not value.startswith(("http://", "https://")):
            raise ConfigError(f"image.image_pull_proxy.{key}: {value!r} is not an http:// or https:// URL")
    return settings


def _decryption_keys(table: ConfigTable) -> tuple[str, ...]:
    keys = table.strings("decryption_keys")
    if len(keys) > MAX_DECRYPTION_KEYS:
        raise ConfigError(f"image.decryption_keys: more than {MAX_DECRYPTION_KEYS} keys")
    for key in keys:
        try:
            ResourceUri.parse(key)
        except TrusteeError as exc:
            raise ConfigError(f"image.decryption_keys: {exc.detail}") from None
    return tuple(keys)
