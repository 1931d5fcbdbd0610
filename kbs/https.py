"""The KBS's HTTPS profile: upstream's `[http_server]` TLS keys, parsed and turned into an `ssl.SSLContext`.

Keys (docs/kbs-config.md): `tls_profile` (`modern` | `intermediate` | `old` |
`custom`), `tls_min_version` / `tls_max_version` (`"1.2"` | `"1.3"`),
`tls_ciphers` (OpenSSL cipher string) and `tls_groups` (`"auto"` or one
group name). Our default profile is `modern` (TLS 1.3 only); upstream's is
`intermediate`. A version key given explicitly overrides the profile's.

What Python's `ssl` cannot do is a `ConfigError`, never silently ignored:
it sets TLS 1.2 cipher lists only (`tls_ciphers` does not change the TLS
1.3 suites, which stay OpenSSL's: a warning says so when TLS 1.2 is off),
and one key-exchange group only (a colon list of several is refused).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "modern"
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: Mozilla "intermediate" (v5) TLS 1.2 suites: forward secret AEAD only.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
    ]
)
#: Mozilla "old" TLS 1.2 suites (3DES left out); still TLS 1.2 minimum, as upstream's `old`.
OLD_CIPHERS = INTERMEDIATE_CIPHERS + ":" + ":".join(
    [
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
        "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA",
    ]
)
#: profile -> (min version, max version, TLS 1.2 ciphers or None for OpenSSL's defaults).
PROFILES: dict[str, tuple[str, str, str | None]] = {
    "modern": ("1.3", "1.3", INTERMEDIATE_CIPHERS),
    "intermediate": ("1.2", "1.3", INTERMEDIATE_CIPHERS),
    "old": ("1.2", "1.3", OLD_CIPHERS),
    "custom": ("1.2", "1.3", None),
}
#: Upstream/IANA group names -> OpenSSL short names that `set_ecdh_curve` knows.
GROUP_ALIASES = {"secp256r1": "prime256v1", "p-256": "prime256v1", "p-384": "secp384r1", "p-521": "secp521r1", "x25519": "X25519",
                 "x448": "X448"}


@dataclass(frozen=True)
class TlsSettings:
    profile: str = DEFAULT_PROFILE
    min_version: str = "1.3"
    max_version: str = "1.3"
    #: TLS 1.2 cipher string; None: OpenSSL's defaults.
    ciphers: str | None = INTERMEDIATE_CIPHERS
    #: One group name; None: OpenSSL's default list ("auto").
    group: str | None = None
    #: True when `tls_ciphers` was given (not just the profile's list).
    ciphers_given: bool = False


def _version(table: ConfigTable, key: str, default: str) -> str:
    value = table.string(key, default) or default
    if value not in VERSIONS:
        raise ConfigError(f"http_server.{key} must be \"1.2\" or \"1.3\", got {value!r}")
    return value


def parse_tls_settings(table: ConfigTable) -> TlsSettings:
    """Read the five `tls_*` keys of `[http_server]` (the caller finishes the table)."""
    profile = table.string("tls_profile", DEFAULT_PROFILE) or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise ConfigError(f"http_server.tls_profile {profile!r} is not one of {', '.join(PROFILES)}")
    low, high, profile_ciphers = PROFILES[profile]
    low, high = _version(table, "tls_min_version", low), _version(table, "tls_max_version", high)
    if VERSIONS[low] > VERSIONS[high]:
        raise ConfigError(f"http_server.tls_min_version {low!r} is above tls_max_version {high!r}")
    ciphers = table.string("tls_ciphers")
    if ciphers is not None and not ciphers.strip():
        raise ConfigError("http_server.tls_ciphers must not be empty")
    return TlsSettings(profile, low, high, ciphers or profile_ciphers, _group(table.string("tls_groups")), ciphers is not None)


def _group(text: str | None) -> str | None:
    if text is None or text.strip().lower() == "auto":
        return None
    names = [n for n in text.split(":") if n.strip()]
    if len(names) != 1:
        raise ConfigError(
            f"http_server.tls_groups {text!r}: Python's ssl can restrict key exchange to one group only; "
            "give one group (e.g. \"X25519\") or \"auto\" (OpenSSL's default list)"
        )
    name = names[0].strip()
    return GROUP_ALIASES.get(name.lower(), name)


def server_context(settings: TlsSettings, certificate: Path, private_key: Path) -> ssl.SSLContext:
    """The HTTPS server context; every refusal is a `ConfigError` naming the key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = VERSIONS[settings.min_version]
    context.maximum_version = VERSIONS[settings.max_version]
    if settings.ciphers is not None:
        try:
            context.set_ciphers(settings.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"http_server.tls_ciphers {settings.ciphers!r} selects no cipher OpenSSL knows") from None
    if settings.ciphers_given and settings.min_version == "1.3":
        logger.warning("http_server.tls_ciphers only applies to TLS 1.2, which is off (tls_min_version = \"1.3\"): "
                       "TLS 1.3 uses OpenSSL's suites")
    if settings.group is not None:
        try:
            context.set_ecdh_curve(settings.group)
        except (ValueError, ssl.SSLError):
            raise ConfigError(f"http_server.tls_groups: {settings.group!r} is not a key-exchange group OpenSSL knows") from None
    try:
        context.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"http_server: cannot load certificate/private_key: {exc}") from None
    return context
