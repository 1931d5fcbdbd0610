"""Where `kbs-client config` gets its admin token from.

In order, the first that applies:

1. `--auth-private-key FILE`: sign a fresh 5-minute admin JWT (role
   "admin") with that key (upstream's kbs-client up to v0.20);
2. `--admin-token-file FILE` (upstream's flag since v0.21);
3. the environment variables `KBS_CLIENT_AUTH_PRIVATE_KEY`, then
   `KBS_CLIENT_ADMIN_TOKEN_FILE` (ours);
4. the first of these files that exists:
   `kbs/config/docker-compose/admin-token` relative to the working
   directory (written by upstream's docker-compose `setup` service; upstream
   looks here first), `$TRUSTEE_DATA_DIR/admin/token` (default
   `./trustee-data/admin/token`, written by our `trustee run`), and
   `$HOME/.trustee/admin-token` (upstream's per-user location; checked
   last so a token left by an upstream install never shadows the stack
   running in this directory);
5. none: the request goes without an `Authorization` header, which only
   an `InsecureAllowAll` KBS accepts. When the KBS then refuses, the error
   names every place that was looked at.

A file that exists but cannot be read, or is empty, is an error naming it
(upstream skips an unreadable compose token and sends `Bearer ` for an
empty one). Tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trustee_common.admin_token import mint_admin_token
from trustee_common.errors import ConfigError

logger = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
MINTED_TOKEN_LIFETIME_SECONDS = 300
DEFAULT_DATA_DIR = "trustee-data"
#: Upstream's docker-compose token, relative to the working directory (upstream `DOCKER_COMPOSE_ADMIN_TOKEN_PATH`).
COMPOSE_TOKEN_PATH = Path("kbs/config/docker-compose/admin-token")


@dataclass(frozen=True)
class AdminToken:
    """The bearer token to send (None: no `Authorization` header), where it came from, and what was looked at."""

    value: str | None
    source: str
    tried: tuple[str, ...] = ()

    def refusal_hint(self) -> str:
        """What to add to the KBS's refusal of an admin request sent with this token."""
        if self.value is not None:
            return f"(admin token from {self.source})"
        return ("(no admin token was sent: no --admin-token-file, --auth-private-key, KBS_CLIENT_ADMIN_TOKEN_FILE "
                f"or KBS_CLIENT_AUTH_PRIVATE_KEY, and no file at {', '.join(self.tried)})")


def read_input_file(path: str, what: str) -> bytes:
    """The bytes of a file named on the command line; `ConfigError` naming the flag otherwise."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def default_token_paths(environ: Mapping[str, str]) -> list[Path]:
    """The files looked at, in order, when no flag or environment variable names a token."""
    paths = [COMPOSE_TOKEN_PATH, Path(environ.get("TRUSTEE_DATA_DIR") or DEFAULT_DATA_DIR) / "admin" / "token"]
    if environ.get("HOME"):
        paths.append(Path(environ["HOME"]) / ".trustee" / "admin-token")
    return paths


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


def _explicit(private_key_file: str | None, token_file: str | None, environ: Mapping[str, str]) -> AdminToken | None:
    """The token a flag or an environment variable names, if any."""
    if private_key_file:
        logger.info("signing an admin token with %s", private_key_file)
        return AdminToken(_minted(private_key_file, "--auth-private-key"), f"--auth-private-key {private_key_file}")
    if token_file:
        return AdminToken(_token_from_file(token_file, "--admin-token-file"), f"--admin-token-file {token_file}")
    for variable, read in (("KBS_CLIENT_AUTH_PRIVATE_KEY", _minted), ("KBS_CLIENT_ADMIN_TOKEN_FILE", _token_from_file)):
        if environ.get(variable):
            return AdminToken(read(environ[variable], variable), f"{variable}={environ[variable]}")
    return None


def resolve_admin_token(private_key_file: str | None, token_file: str | None, environ: Mapping[str, str]) -> AdminToken:
    """The admin token to send, following the order of the module docstring."""
    explicit = _explicit(private_key_file, token_file, environ)
    if explicit is not None:
        return explicit
    candidates = default_token_paths(environ)
    for path in candidates:
        if path.is_file():
            logger.info("using the admin token in %s", path)
            return AdminToken(_token_from_file(str(path), "admin token file"), _shown(path))
    logger.info("no admin token: sending admin requests without Authorization")
    return AdminToken(None, "nowhere", tuple(_shown(p) for p in candidates))


def _shown(path: Path) -> str:
    """A path for a message; a relative one with `./` so it reads as relative to the working directory."""
    return str(path) if path.is_absolute() else f"./{path}"
