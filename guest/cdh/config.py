"""Confidential Data Hub configuration (upstream `cdh.toml` keys, gRPC build).

```toml
socket = "127.0.0.1:50000"
skip_sealed_secret_verification = false   # upstream key; only false is accepted
[kbc]
name = "cc_kbc"
url = "http://127.0.0.1:8080"
kbs_cert = "<PEM>"          # optional extra root CA for HTTPS
[aa]
aa_socket = "127.0.0.1:50002"
[log]
level = "info"
[sealed_secret]                           # this CDH's own table (docs/sealed-secrets.md)
verification_keys = ["kbs:///default/sealed-secret/pubkey", "/etc/cdh/sealed-secret/key-2"]
```

Without a config file the KBC comes from `AA_KBC_PARAMS` (`cc_kbc::<url>`)
or the kernel command line `agent.aa_kbc_params=`. Only `cc_kbc` is
served; `[[credentials]]`, an upstream key this CDH does not implement, is
refused by name rather than ignored. `[image]` (image pull, encrypted
layers) is documented in `guest.cdh.image_config` and docs/encrypted-images.md.

`sealed_secret.verification_keys` lists the keys `UnsealSecret` trusts
(default none: every sealed secret is refused). An entry is a `kbs:///`
resource URI, fetched from the KBS at each unseal, whose key id (`kid`
in the secret's header) is the URI itself; or an absolute file path, read
at start-up, whose key id is the file name. Keys are EC P-256 public keys
as a JWK or PEM. `skip_sealed_secret_verification = true` (upstream's
switch to accept unsigned secrets) is refused. This module only parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from guest.attestation_agent.config import CC_KBC, KERNEL_PARAM, check_cert_pem, http_url, kbc_params_url
from guest.cdh.image_config import ImageSettings, parse_image_table
from guest.resource_uri import ResourceUri
from trustee_common.addresses import grpc_target, parse_listen_address
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, TrusteeError

DEFAULT_SOCKET = "127.0.0.1:50000"
DEFAULT_AA_SOCKET = "127.0.0.1:50002"
UNIMPLEMENTED_KEYS = ("credentials",)
SKIP_VERIFICATION_KEY = "skip_sealed_secret_verification"


@dataclass(frozen=True)
class KbcConfig:
    url: str
    kbs_cert: bytes | None = None


@dataclass(frozen=True)
class CdhConfig:
    socket: str = DEFAULT_SOCKET
    kbc: KbcConfig | None = None
    aa_socket: str = DEFAULT_AA_SOCKET
    log_level: str | None = None
    #: `kbs:///` URIs and absolute file paths, as written.
    verification_keys: tuple[str, ...] = ()
    #: `[image]`: image pull and encrypted layers (guest.cdh.image_config).
    image: ImageSettings = field(default_factory=ImageSettings)


def _kbc_table(table: ConfigTable) -> KbcConfig:
    name = table.required_string("name")
    url = table.string("url", "") or ""
    cert = table.string("kbs_cert")
    table.finish()
    if name != CC_KBC:
        raise ConfigError(f"kbc.name: {name!r} is not supported (only {CC_KBC!r})")
    return KbcConfig(http_url(url, "kbc.url"), None if cert is None else check_cert_pem(cert, "kbc.kbs_cert"))


def parse_config(data: dict[str, Any]) -> CdhConfig:
    """Build the config from a decoded TOML/JSON document; unknown keys are errors."""
    for key in UNIMPLEMENTED_KEYS:
        if key in data:
            raise ConfigError(f"config key {key!r} is an upstream CDH feature that this CDH does not implement")
    root = ConfigTable(data, "config")
    socket = root.string("socket", DEFAULT_SOCKET) or DEFAULT_SOCKET
    parse_listen_address(socket, "socket")
    kbc = _kbc_table(root.table("kbc")) if root.has("kbc") else None
    aa = root.table("aa")
    aa_socket = aa.string("aa_socket", DEFAULT_AA_SOCKET) or DEFAULT_AA_SOCKET
    grpc_target(aa_socket, "aa.aa_socket")
    aa.finish()
    log = root.table("log")
    level = log.string("level")
    log.finish()
    if root.boolean(SKIP_VERIFICATION_KEY, False):
        raise ConfigError(f"{SKIP_VERIFICATION_KEY} = true is not supported: sealed secrets must be signed "
                          "(list their keys in sealed_secret.verification_keys)")
    keys = _verification_keys(root.table("sealed_secret"))
    image = parse_image_table(root.table("image"))
    root.finish()
    return CdhConfig(socket=socket, kbc=kbc, aa_socket=aa_socket, log_level=level, verification_keys=keys, image=image)


def _verification_keys(table: ConfigTable) -> tuple[str, ...]:
    entries = table.strings("verification_keys")
    table.finish()
    for entry in entries:
        if "://" in entry:
            try:
                ResourceUri.parse(entry)
            except TrusteeError as exc:
                raise ConfigError(f"sealed_secret.verification_keys: {exc.detail}") from None
        elif not PurePath(entry).is_absolute():
            raise ConfigError(f"sealed_secret.verification_keys: {entry!r} is neither a kbs:/// URI nor an absolute file path")
    return tuple(entries)


def config_from_kbc_params(env_value: str | None, kernel_cmdline: str | None) -> CdhConfig:
    """Defaults, with the KBC from `AA_KBC_PARAMS` or the kernel command line."""
    if env_value is not None:
        url = kbc_params_url(env_value, "AA_KBC_PARAMS")
    else:
        param = next((p for p in (kernel_cmdline or "").split() if p.startswith(KERNEL_PARAM)), None)
        url = None if param is None else kbc_params_url(param.removeprefix(KERNEL_PARAM), KERNEL_PARAM.rstrip("="))
    return CdhConfig(kbc=None if url is None else KbcConfig(url))
