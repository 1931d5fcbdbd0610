"""Attestation Agent configuration (upstream `attestation-agent` config file).

```toml
[token_configs.kbs]
url = "http://127.0.0.1:8080"
cert = "<PEM>"                          # optional extra root CA for HTTPS
tee_key_algorithm = "ECDH-ES+A256KW-P256"
[token_configs.coco_as]
url = "http://127.0.0.1:8000"
[eventlog_config]
init_pcr = 17
enable_eventlog = false
[log]
level = "info"
```

Without a config file the KBS URL comes from `aa_kbc_params`
(`cc_kbc::<url>`): the `AA_KBC_PARAMS` environment variable first, else the
kernel command line `agent.aa_kbc_params=` (guest-components.md 2.4). This
module only parses: the caller reads files and the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError
from trustee_common.jose import KEY_ALGORITHMS

DEFAULT_KEY_ALGORITHM = "ECDH-ES+A256KW-P256"
DEFAULT_INIT_PCR = 17
CC_KBC = "cc_kbc"
KERNEL_PARAM = "agent.aa_kbc_params="


@dataclass(frozen=True)
class KbsTokenConfig:
    url: str
    cert_pem: bytes | None = None
    tee_key_algorithm: str = DEFAULT_KEY_ALGORITHM


@dataclass(frozen=True)
class CocoAsTokenConfig:
    url: str


@dataclass(frozen=True)
class EventlogConfig:
    init_pcr: int = DEFAULT_INIT_PCR
    enable_eventlog: bool = False


@dataclass(frozen=True)
class AaConfig:
    kbs: KbsTokenConfig | None = None
    coco_as: CocoAsTokenConfig | None = None
    eventlog: EventlogConfig = field(default_factory=EventlogConfig)
    log_level: str | None = None


def http_url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where} must be an http:// or https:// URL, got {value!r}")
    return value


def check_cert_pem(text: str, where: str) -> bytes:
    """PEM text holding at least one X.509 certificate, as bytes."""
    data = text.encode()
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a PEM certificate: {exc}") from exc
    return data


def _kbs_table(table: ConfigTable) -> KbsTokenConfig:
    url = http_url(table.required_string("url"), "token_configs.kbs.url")
    cert = table.string("cert")
    algorithm = table.string("tee_key_algorithm", DEFAULT_KEY_ALGORITHM) or DEFAULT_KEY_ALGORITHM
    table.finish()
    if algorithm not in KEY_ALGORITHMS:
        raise ConfigError(f"token_configs.kbs.tee_key_algorithm: {algorithm!r} is not one of {', '.join(KEY_ALGORITHMS)}")
    cert_pem = None if cert is None else check_cert_pem(cert, "token_configs.kbs.cert")
    return KbsTokenConfig(url, cert_pem, algorithm)


def parse_config(data: dict[str, Any]) -> AaConfig:
    """Build the config from a decoded TOML/JSON document; unknown keys are errors."""
    root = ConfigTable(data, "config")
    tokens = root.table("token_configs")
    kbs = _kbs_table(tokens.table("kbs")) if tokens.has("kbs") else None
    coco_as = None
    if tokens.has("coco_as"):
        table = tokens.table("coco_as")
        coco_as = CocoAsTokenConfig(http_url(table.required_string("url"), "token_configs.coco_as.url"))
        table.finish()
    tokens.finish()
    events = root.table("eventlog_config")
    eventlog = EventlogConfig(events.integer("init_pcr", DEFAULT_INIT_PCR, minimum=0), events.boolean("enable_eventlog", False))
    events.finish()
    log = root.table("log")
    level = log.string("level")
    log.finish()
    root.finish()
    return AaConfig(kbs=kbs, coco_as=coco_as, eventlog=eventlog, log_level=level)


def kbc_params_url(params: str, where: str) -> str | None:
    """The KBS URL from `<kbc>::<url>`, or None for a KBC other than `cc_kbc`."""
    kbc, sep, url = params.partition("::")
    if not sep:
        raise ConfigError(f"{where}: {params!r} is not <kbc>::<url>")
    if kbc != CC_KBC:
        return None
    return http_url(url, where)


def config_from_kbc_params(env_value: str | None, kernel_cmdline: str | None) -> AaConfig:
    """Defaults, with `token_configs.kbs` from `AA_KBC_PARAMS` or the kernel command line."""
    if env_value is not None:
        url = kbc_params_url(env_value, "AA_KBC_PARAMS")
    else:
        param = next((p for p in (kernel_cmdline or "").split() if p.startswith(KERNEL_PARAM)), None)
        url = None if param is None else kbc_params_url(param.removeprefix(KERNEL_PARAM), KERNEL_PARAM.rstrip("="))
    return AaConfig(kbs=None if url is None else KbsTokenConfig(url))
