"""The pin's configuration: the JSON `clevis encrypt trustee CONFIG` takes. Pure.

Keys (docs/disk-encryption.md has the same list):

- `url` (required): KBS base URL, `http://` or `https://`; the admin API
  stores the key there. Kept in the JWE header.
- `path` (required): KBS resource path `<repository>/<type>/<tag>` of
  this binding's key, e.g. `default/disk/root`. One path per binding:
  binding again to the same path replaces the key and orphans earlier
  JWEs. Kept in the JWE header.
- `cdh` (default `http://127.0.0.1:8006`): how decrypt reaches the local
  Confidential Data Hub. `http://host:port` is the guest REST API
  (`GET /cdh/resource/<path>`); `grpc://host:port` or `unix:<socket>` the
  CDH gRPC `GetResource`. Kept in the JWE header only when given. The
  environment variable `CLEVIS_TRUSTEE_CDH` overrides it at decrypt time.
- `cert_file`: PEM root certificate of an `https://` KBS (as
  `kbs-client --cert-file`). Not kept in the JWE.
- `admin_token_file`: file holding an admin JWT (as `kbs-client config
  --admin-token-file`). Not kept in the JWE.
- `auth_private_key`: PEM private key to sign a 5-minute admin JWT with
  (as `kbs-client config --auth-private-key`). Not kept in the JWE.

Without `admin_token_file` and `auth_private_key` the admin token is found
as `kbs-client` finds it (`kbs_client.auth`: the environment variables
`KBS_CLIENT_AUTH_PRIVATE_KEY` and `KBS_CLIENT_ADMIN_TOKEN_FILE`, then the
default token files). Any other key is refused, naming it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clevis_trustee.jwe import PinError
from trustee_common.addresses import grpc_target, parse_listen_address
from trustee_common.errors import ConfigError

DEFAULT_CDH = "http://127.0.0.1:8006"
CDH_ENV = "CLEVIS_TRUSTEE_CDH"
KEYS = ("url", "path", "cdh", "cert_file", "admin_token_file", "auth_private_key")
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]+$")


@dataclass(frozen=True)
class EncryptConfig:
    url: str
    path: str
    cdh: str | None = None
    cert_file: str | None = None
    admin_token_file: str | None = None
    auth_private_key: str | None = None

    def header(self) -> dict[str, str]:
        """What goes into the JWE header: where the key is, never how to write it."""
        header = {"url": self.url, "path": self.path}
        if self.cdh is not None:
            header["cdh"] = self.cdh
        return header


@dataclass(frozen=True)
class CdhEndpoint:
    """How decrypt reaches the CDH: REST base URL (`rest`) or gRPC target (`grpc`)."""

    rest: str | None = None
    grpc: str | None = None

    def describe(self) -> str:
        return f"the guest REST API at {self.rest}" if self.rest else f"the confidential data hub at {self.grpc}"


def resource_path(value: str, field: str) -> str:
    segments = value.strip("/").split("/")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise ConfigError(f"{field}: {value!r} is not <repository>/<type>/<tag> (letters, digits, _ - .)")
    return "/".join(segments)


def kbs_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{field}: {value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def cdh_endpoint(value: str, field: str) -> CdhEndpoint:
    """`http://host:port` (REST), `grpc://host:port` or `unix:<path>` (gRPC)."""
    if value.startswith("unix:"):
        return CdhEndpoint(grpc=grpc_target(value, field))
    parts = urlsplit(value)
    if parts.scheme == "grpc" and parts.netloc and parts.path in ("", "/"):
        return CdhEndpoint(grpc=grpc_target(parts.netloc, field))
    if parts.scheme == "http" and parts.netloc and parts.path in ("", "/") and not parts.query:
        parse_listen_address(parts.netloc, field)
        return CdhEndpoint(rest=value.rstrip("/"))
    raise ConfigError(f"{field}: {value!r} is not http://host:port (guest REST API), grpc://host:port or unix:<socket> (CDH gRPC)")


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{key}: must be a non-empty string")
    return value


def parse_encrypt_config(text: str) -> EncryptConfig:
    """The CONFIG argument; `PinError` naming the key that is wrong."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise PinError("configuration is not valid JSON") from None
    if not isinstance(raw, dict):
        raise PinError("configuration must be a JSON object")
    try:
        return _config(raw)
    except ConfigError as exc:
        raise PinError(f"configuration: {exc.detail}") from None


def _config(raw: dict[str, Any]) -> EncryptConfig:
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    for key in ("url", "path"):
        if key not in raw:
            raise ConfigError(f"missing the required {key!r} property")
    url, path, cdh = _optional_str(raw, "url"), _optional_str(raw, "path"), _optional_str(raw, "cdh")
    if cdh is not None:
        cdh_endpoint(cdh, "cdh")
    if raw.get("admin_token_file") is not None and raw.get("auth_private_key") is not None:
        raise ConfigError("admin_token_file and auth_private_key: give at most one")
    return EncryptConfig(kbs_url(str(url), "url"), resource_path(str(path), "path"), cdh, _optional_str(raw, "cert_file"),
                         _optional_str(raw, "admin_token_file"), _optional_str(raw, "auth_private_key"))
