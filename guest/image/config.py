"""What an image pull is allowed to do: limits, registry rules, credentials, platform.

`ImageConfig` carries everything `pull_image` needs besides the reference and
the bundle path. Its field names follow upstream CDH's `[image]` table where
upstream has one (`work_dir`, `max_concurrent_layer_downloads_per_image`,
`extra_root_certificates`, `registry_config`); the size caps are ours.

Registry rules are the `[[registry]]` tables of containers-registries.conf as
upstream image-rs reads them (`[image.registry_config]` or the file at
`registry_configuration_uri`, parsed by `guest.cdh.image_config`): `prefix`,
`location`, `insecure`, `blocked`, matched on the longest prefix. `insecure = true` means plain HTTP to that
registry; nothing is insecure unless a rule says so, loopback included.
`location` remaps the prefix to another registry or path. Mirrors (`[[registry.mirror]]`)
and search registries other than `docker.io` are refused as unsupported.

Credentials are a docker `config.json` (`{"auths": {"host:port": {"auth":
"<base64 user:pass>"}}}`), as upstream's `authenticated_registry_credentials_uri`
resource holds. Pure: parsing only.
"""

from __future__ import annotations

import base64
import binascii
import json
import platform as _platform
from dataclasses import dataclass, field
from pathlib import Path

from guest.image.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, ImageReference, parse_reference
from trustee_common.errors import ConfigError, MalformedRequestError, clip_repr

MiB = 1 << 20
GiB = 1 << 30
#: Upstream's default for `max_concurrent_layer_downloads_per_image`.
DEFAULT_CONCURRENT_LAYER_DOWNLOADS = 3
MAX_RULES = 256
MAX_CREDENTIALS_BYTES = 1 * MiB

_MACHINE_TO_ARCH = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
                    "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
                    "s390x": ("s390x", None), "ppc64le": ("ppc64le", None), "riscv64": ("riscv64", None),
                    "i686": ("386", None), "i386": ("386", None)}


@dataclass(frozen=True)
class Platform:
    """The platform picked from a multi-platform index (OCI `platform` fields)."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def current(cls) -> Platform:
        """linux/<this machine's architecture>, as Go's GOARCH names it."""
        machine = _platform.machine().lower()
        arch, variant = _MACHINE_TO_ARCH.get(machine, (machine, None))
        return cls("linux", arch, variant)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class RegistryRule:
    """One `[[registry]]` table. `prefix` defaults to `location`."""

    prefix: str
    location: str = ""
    insecure: bool = False
    blocked: bool = False

    def matches(self, reference: str) -> int:
        """Length of the matched prefix of `reference` (`host/repo:tag`), 0 when it does not match."""
        prefix = self.prefix
        if prefix.startswith("*."):
            host = reference.split("/", 1)[0].split(":", 1)[0]
            return len(reference.split("/", 1)[0]) if host.endswith(prefix[1:]) else 0
        if not reference.startswith(prefix):
            return 0
        if len(reference) == len(prefix) or reference[len(prefix)] in ":/@":
            return len(prefix)
        return 0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class ImageConfig:
    """Settings of one CDH's image pulls (see the module docstring for names and defaults)."""

    #: Where blobs are downloaded and decrypted; default: the bundle's parent directory.
    work_dir: Path | None = None
    max_concurrent_layer_downloads_per_image: int = DEFAULT_CONCURRENT_LAYER_DOWNLOADS
    registry_rules: tuple[RegistryRule, ...] = ()
    #: Registry `host[:port]` → credentials (from a docker `auths` JSON, see `parse_credentials`).
    credentials: dict[str, Credentials] = field(default_factory=dict)
    #: PEM certificates trusted for registry HTTPS besides the system's.
    extra_root_certificates: tuple[str, ...] = ()
    platform: Platform = field(default_factory=Platform.current)
    max_manifest_bytes: int = 4 * MiB
    max_config_bytes: int = 4 * MiB
    max_layers: int = 256
    #: One layer blob as downloaded (compressed, maybe encrypted).
    max_layer_bytes: int = 2 * GiB
    #: All layer blobs of the image together.
    max_image_bytes: int = 4 * GiB
    #: One layer once decompressed (the tar stream).
    max_layer_uncompressed_bytes: int = 4 * GiB
    #: Tar entries in one layer.
    max_layer_entries: int = 200_000
    #: `[image.image_pull_proxy]`: proxies for registry requests by URL scheme, and hosts that bypass them.
    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None
    connect_timeout: float = 30.0
    #: Seconds a read from the registry may stall (a blob download as a whole is bounded by size, not time).
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent_layer_downloads_per_image <= 64:
            raise ConfigError("image.max_concurrent_layer_downloads_per_image must be 1 to 64")
        if len(self.registry_rules) > MAX_RULES:
            raise ConfigError(f"image.registry_config: more than {MAX_RULES} [[registry]] tables")

    def resolve(self, reference: ImageReference) -> tuple[ImageReference, bool]:
        """Apply the registry rules: the reference to pull and whether it is over plain HTTP."""
        text = f"{reference.registry}/{reference.repository}"
        best: RegistryRule | None = None
        best_len = 0
        for rule in self.registry_rules:
            length = rule.matches(text)
            if length > best_len:
                best, best_len = rule, length
        if best is None:
            return reference, False
        if best.blocked:
            raise MalformedRequestError(f"image {reference} is blocked by the registry configuration")
        if best.location and best.location != best.prefix and not best.prefix.startswith("*."):
            remapped = parse_reference(best.location + text[best_len:])
            reference = reference.with_location(remapped.registry, remapped.repository)
        return reference, best.insecure

    def credentials_for(self, registry: str) -> Credentials | None:
        if registry == DOCKER_HUB:
            for alias in (*sorted(DOCKER_HUB_ALIASES), "index.docker.io/v1"):
                if alias in self.credentials:
                    return self.credentials[alias]
        return self.credentials.get(registry)


def parse_credentials(document: bytes) -> dict[str, Credentials]:
    """Credentials from a docker config JSON (`auths` → `auth` = base64 `user:pass`, or `username`/`password`)."""
    if len(document) > MAX_CREDENTIALS_BYTES:
        raise ConfigError("registry credentials: the document is over 1 MiB")
    try:
        auths = json.loads(document)["auths"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError("registry credentials: not a docker config JSON with an 'auths' object") from exc
    if not isinstance(auths, dict):
        raise ConfigError("registry credentials: 'auths' must be an object")
    return {_registry_key(key): _credential(key, value) for key, value in auths.items()}


def _registry_key(key: str) -> str:
    host = key.removeprefix("https://").removeprefix("http://").rstrip("/")
    return host if host == "index.docker.io/v1" else host.split("/", 1)[0]


def _credential(key: str, value: object) -> Credentials:
    if not isinstance(value, dict):
        raise ConfigError(f"registry credentials: entry {clip_repr(key)} must be an object")
    auth = value.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, colon, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"registry credentials: entry {clip_repr(key)} has an 'auth' that is not base64") from exc
        if not colon:
            raise ConfigError(f"registry credentials: entry {clip_repr(key)} 'auth' is not user:password")
        return Credentials(user, password)
    name, secret = value.get("username"), value.get("password")
    if isinstance(name, str) and isinstance(secret, str):
        return Credentials(name, secret)
    raise ConfigError(f"registry credentials: entry {clip_repr(key)} has no 'auth' nor username/password")


def proxy_for(config: ImageConfig, scheme: str, host: str) -> str | None:
    """The proxy URL for a request to `host` by `scheme`, or None (no proxy configured, or `host` is in `no_proxy`).

    `no_proxy` is a comma-separated list as curl reads it: `*` (no proxy at
    all), a host name or address (`host` or `host:port`), or a domain suffix
    (`.example.com` or `example.com`, which also covers its subdomains).
    """
    proxy = config.https_proxy if scheme == "https" else config.http_proxy
    if proxy is None:
        return None
    name = host.lower()
    hostname = name.split(":", 1)[0]
    for entry in (e.strip().lower() for e in (config.no_proxy or "").split(",")):
        bare = entry.lstrip(".")
        if entry == "*" or (entry and (name == entry or hostname == bare or hostname.endswith("." + bare))):
            return None
    return proxy
