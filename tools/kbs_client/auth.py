"""Where `kbs-client config` gets its admin token from.

In order: `--auth-private-key` (sign a fresh 5-minute admin JWT, role
"admin"), `--admin-token-file`, the environment variables
`KBS_CLIENT_AUTH_PRIVATE_KEY` and `KBS_CLIENT_ADMIN_TOKEN_FILE`, then the
token `trustee run` keeps in `$TRUSTEE_DATA_DIR/admin/token` (default
`./trustee-data/admin/token`) if that file exists; otherwise no token,
and the request goes without an `Authorization` header. Tokens are never
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from trustee_common.admin_token import mint_admin_token
from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
MINTED_TOKEN_LIFETIME_SECONDS = 300
DEFAULT_DATA_DIR = "trustee-data"


def read_input_file(path: str, what: str) -> bytes:
    """The bytes of a file named on the command line; `ConfigError` naming the flag otherwise."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def default_token_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("TRUSTEE_DATA_DIR") or DEFAULT_DATA_DIR) / "admin" / "token"


def _token_from_file(path: str, what: str) -> str:
    token = read_input_file(path, what).decode("utf-8", errors="replace").strip()
    if not token:
        raise ConfigError(f"{what} {path} is empty")
    return token


def _minted(path: str, what: str) -> str:
    try:
        return mint_admin_token(read_input_file(path, what), role=ADMIN_ROLE, lifetime_seconds=MINTED_TOKEN_LIFETIME_SECONDS)
    except ConfigError as exc:
        raise ConfigError(f"{what} {path}: {exc.detail}") from None


def resolve_admin_token(private_key_file: str | None, token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token to send, or None for no `Authorization` header."""
    if private_key_file:
        logger.info("signing an admin token with %s", private_key_file)
        return _minted(private_key_file, "--auth-private-key")
    if token_file:
        return _token_from_file(token_file, "--admin-token-file")
    if environ.get("KBS_CLIENT_AUTH_PRIVATE_KEY"):
        return _minted(environ["KBS_CLIENT_AUTH_PRIVATE_KEY"], "KBS_CLIENT_AUTH_PRIVATE_KEY")
    if environ.get("KBS_CLIENT_ADMIN_TOKEN_FILE"):
        return _token_from_file(environ["KBS_CLIENT_ADMIN_TOKEN_FILE"], "KBS_CLIENT_ADMIN_TOKEN_FILE")
    default = default_token_path(environ)
    if default.is_file():
        logger.info("using the admin token in %s", default)
        return _token_from_file(str(default), "admin token file")
    logger.info("no admin token: sending admin requests without Authorization")
    return None
