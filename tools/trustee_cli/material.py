"""Key material and generated files in the data directories of `trustee`.

`prepare_server_dir` creates (once) and reuses the admin key pair, the
admin token, the AS token-signing CA/key/chain and, with `--tls`, the local
TLS CA and certificates (`trustee_cli.tls_material`), and writes the three
service configs on every start. The admin token (30 days) is re-minted
when it is missing, does not verify with `admin/public.pem`, or has less
than 7 days left. Private keys and the token are written 0600 and never
logged. `prepare_guest_dir` writes `aa.toml` and `cdh.toml`. File system
failures become `ConfigError` naming the path.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

from trustee_cli.configs import GuestSettings, ServerPaths, ServerSettings, guest_config_files, server_config_files
from trustee_cli.tls_material import ensure_service_tls
from trustee_common.admin_token import generate_admin_key, mint_admin_token
from trustee_common.errors import ConfigError
from trustee_common.pki import ensure_token_signing_material

logger = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
ADMIN_TOKEN_LIFETIME_SECONDS = 30 * 24 * 3600
ADMIN_TOKEN_RENEW_BEFORE_SECONDS = 7 * 24 * 3600


@contextmanager
def _file_errors(root: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        where = exc.filename or root
        raise ConfigError(f"cannot prepare the data directory {root}: {where}: {exc.strerror or exc}") from None


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def _ensure_admin_key(paths: ServerPaths) -> bytes:
    """The admin private key PEM, generated on first use; `public.pem` kept in step with it."""
    if paths.admin_key.exists():
        private = paths.admin_key.read_bytes()
        try:
            key = serialization.load_pem_private_key(private, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paths.admin_key} is not a PEM private key: {exc}") from None
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        private, public = generate_admin_key()
        write_private(paths.admin_key, private)
        logger.info("created admin key %s", paths.admin_key)
    if not paths.admin_public.exists() or paths.admin_public.read_bytes() != public:
        paths.admin_public.write_bytes(public)
    return private


def token_still_good(token: str, public_pem: bytes, now: float) -> bool:
    """True if `token` verifies with `public_pem`, has role admin and more than the renewal margin left."""
    try:
        parsed = jwt.JWT(jwt=token, key=jwk.JWK.from_pem(public_pem), check_claims=False)
        claims = json.loads(parsed.claims)
    except (JWException, ValueError, TypeError):
        return False
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return claims.get("role") == ADMIN_ROLE and isinstance(exp, int) and exp - now > ADMIN_TOKEN_RENEW_BEFORE_SECONDS


def _ensure_admin_token(paths: ServerPaths, private: bytes, now: float) -> None:
    if paths.admin_token.exists():
        current = paths.admin_token.read_text(encoding="utf-8", errors="replace").strip()
        if token_still_good(current, paths.admin_public.read_bytes(), now):
            return
        logger.info("admin token in %s is expired, near expiry or from another key: minting a new one", paths.admin_token)
    token = mint_admin_token(private, role=ADMIN_ROLE, lifetime_seconds=ADMIN_TOKEN_LIFETIME_SECONDS, now=now)
    write_private(paths.admin_token, (token + "\n").encode())


def prepare_server_dir(paths: ServerPaths, settings: ServerSettings, now: float | None = None) -> None:
    """Create or reuse the key material under `paths.root` and (re)write the configs."""
    with _file_errors(paths.root):
        if paths.root.exists() and not paths.root.is_dir():
            raise ConfigError(f"data directory {paths.root} exists and is not a directory")
        collateral = paths.as_dir / "dcap-collateral"
        for directory in (paths.root, paths.as_dir, collateral, paths.kbs_dir, paths.rvps_dir, paths.logs_dir, paths.repository):
            directory.mkdir(parents=True, exist_ok=True)
        paths.admin_dir.mkdir(mode=0o700, exist_ok=True)
        private = _ensure_admin_key(paths)
        _ensure_admin_token(paths, private, time.time() if now is None else now)
        ensure_token_signing_material(paths.as_dir)
        if settings.tls:
            ensure_service_tls(paths, settings.host, settings.tls_names, write_private)
        for path, text in server_config_files(paths, settings).items():
            write_private(path, text.encode())  # owner only: a storage URL may hold a password


def prepare_guest_dir(root: Path, settings: GuestSettings) -> dict[Path, str]:
    """Write `aa.toml` and `cdh.toml` under `root` (and `logs/`); returns what was written."""
    files = guest_config_files(root, settings)
    with _file_errors(root):
        if root.exists() and not root.is_dir():
            raise ConfigError(f"data directory {root} exists and is not a directory")
        (root / "logs").mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
    return files
