"""The KBS's HTTPS profile: upstream's `[http_server]` TLS keys, parsed and turned into an `ssl.SSLContext`.

Keys (docs/kbs-config.md): `tls_profile` (`modern` | `intermediate` | `old` |
`custom`), `tls_min_version` / `tls_max_version` (`"1.2"` | `"1.3"`),
`tls_ciphers` (OpenSSL cipher string) and `tls_groups` (`"auto"` or a
colon list of groups). Our default profile is `modern` (TLS 1.3 only);
upstream's is `intermediate`. A version key given explicitly overrides the
profile's.

What Python's `ssl` (3.11, OpenSSL 3.0) cannot do is said, never silently
skipped, and upstream's own files start (warnings are collected with the
other config warnings, `trustee_common.config.config_warning`):

* `tls_ciphers`: its TLS 1.2 names set the TLS 1.2 suites. TLS 1.3 suite
  names (`TLS_AES_256_GCM_SHA384`, ...) cannot be chosen: OpenSSL's TLS 1.3
  suites stay on, with a warning when the names differ from them. As
  upstream, a list with no TLS 1.2 suite while TLS 1.2 is on is refused.
* `tls_groups`: one group only can be set. The first group of the list
  this OpenSSL knows is used; the others (unknown here, e.g. the ML-KEM
  hybrids OpenSSL 3.0 lacks, or further groups) are named in a warning. A
  list with no group OpenSSL knows is refused.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from trustee_common.config import ConfigTable, config_warning
from trustee_common.errors import ConfigError

DEFAULT_PROFILE = "modern"
#: TLS 1.3 suite names (IANA), which OpenSSL's cipher strings do not choose.
TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                          "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"})
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
    #: One group name (OpenSSL's spelling); None: OpenSSL's default list ("auto").
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
    tls12 = None if ciphers is None else _tls12_ciphers(ciphers, tls12_on=low == "1.2", tls13_on=high == "1.3")
    return TlsSettings(profile, low, high, tls12 or profile_ciphers, _group(table.string("tls_groups")), ciphers is not None)


def _tls12_ciphers(text: str, *, tls12_on: bool, tls13_on: bool) -> str | None:
    """The TLS 1.2 part of `tls_ciphers` (None when TLS 1.2 is off); warns about what Python's ssl cannot apply."""
    names = [n.strip() for n in text.split(":") if n.strip()]
    tls13 = [n for n in names if n in TLS13_SUITES]
    tls12 = [n for n in names if n not in TLS13_SUITES]
    if tls13 and tls13_on and set(tls13) != set(_default_tls13_suites()):
        config_warning(
            f"http_server.tls_ciphers: Python's ssl cannot choose TLS 1.3 suites ({':'.join(tls13)}); "
            f"OpenSSL's are offered: {':'.join(_default_tls13_suites())}"
        )
    if not tls12_on:
        if tls12:
            config_warning(f"http_server.tls_ciphers: TLS 1.2 suites ({':'.join(tls12)}) have no effect, TLS 1.2 is off")
        return None
    if not tls12:
        raise ConfigError(
            f"http_server.tls_ciphers {text!r} names no TLS 1.2 suite but TLS 1.2 is on (tls_min_version \"1.2\"); "
            "upstream refuses it too: add TLS 1.2 suites or set tls_min_version = \"1.3\""
        )
    return ":".join(tls12)


def _default_tls13_suites() -> list[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    return [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"]


def _group(text: str | None) -> str | None:
    """The first group of the list OpenSSL knows (Python's ssl sets one); a warning names the rest."""
    if text is None or text.strip().lower() == "auto":
        return None
    names = [n.strip() for n in text.split(":") if n.strip()]
    known = [n for n in names if _known_group(GROUP_ALIASES.get(n.lower(), n))]
    version = ssl.OPENSSL_VERSION.split()[1]
    if not known:
        raise ConfigError(f"http_server.tls_groups {text!r}: no key-exchange group OpenSSL {version} knows")
    dropped = [n for n in names if n != known[0]]
    if dropped:
        unknown = [n for n in dropped if n not in known]
        why = f" ({':'.join(unknown)} unknown to OpenSSL {version})" if unknown else ""
        config_warning(
            f"http_server.tls_groups {text!r}: Python's ssl sets one group, {known[0]} is used; not offered: {':'.join(dropped)}{why}"
        )
    return GROUP_ALIASES.get(known[0].lower(), known[0])


def _known_group(name: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ecdh_curve(name)
    except (ValueError, ssl.SSLError):
        return False
    return True


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
