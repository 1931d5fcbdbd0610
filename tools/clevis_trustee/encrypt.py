"""`clevis-encrypt-trustee CONFIG [-y] < PLAINTEXT > JWE` (run as `clevis encrypt trustee CONFIG`).

Makes a fresh 256-bit key, stores it in the KBS at `path` through the
admin API (`POST /kbs/v0/resource/<path>`, the same call as `kbs-client
config set-resource`), and prints a compact JWE of the plaintext under
that key (`clevis_trustee.jwe`). The JWE header keeps `url`, `path` and
`cdh`; the key and the admin credentials stay out of it. The KBS is
written first: when it refuses, nothing is printed and the exit code is 1.
`-y` (passed by `clevis luks bind -y`) is accepted and changes nothing:
there is no advertisement to trust. CONFIG keys: `clevis_trustee.config`.
"""

from __future__ import annotations

import asyncio
import os
import sys

from kbs_client.admin import AdminClient, KbsRefusedError
from kbs_client.auth import read_input_file, resolve_admin_token

from clevis_trustee import jwe
from clevis_trustee.cli import read_stdin, run, stdin_is_terminal
from clevis_trustee.config import EncryptConfig, parse_encrypt_config
from trustee_common.errors import ConfigError, TrusteeError

PROG = "clevis-encrypt-trustee"
SUMMARY = "Encrypts with a key that a Trustee KBS releases only to attested machines"
USAGE = f"""
Usage: clevis encrypt trustee CONFIG [-y] < PLAINTEXT > JWE

{SUMMARY}

This command uses the following configuration properties:

  url: <string>               KBS base URL (REQUIRED)
  path: <string>              KBS resource path of the key, e.g. default/disk/root (REQUIRED)
  cdh: <string>               where decrypt asks for the key: http://host:port (guest REST API,
                              default http://127.0.0.1:8006), grpc://host:port or unix:<socket> (CDH gRPC)
  cert_file: <string>         PEM root certificate of an https:// KBS
  admin_token_file: <string>  file holding a KBS admin token
  auth_private_key: <string>  PEM key to sign an admin token with

Without admin_token_file or auth_private_key the admin token is found as kbs-client finds it.
"""


async def store_key(config: EncryptConfig, key: bytes) -> None:
    for field, path in (("admin_token_file", config.admin_token_file), ("auth_private_key", config.auth_private_key)):
        if path is not None:
            read_input_file(path, field)  # a missing file is named by its config key
    token = resolve_admin_token(config.auth_private_key, config.admin_token_file, os.environ)
    cert = read_input_file(config.cert_file, "cert_file") if config.cert_file else None
    async with AdminClient(config.url, token=token.value, cert_pem=cert) as admin:
        try:
            await admin.set_resource(config.path, jwe.key_jwk(key))
        except KbsRefusedError as exc:
            raise jwe.PinError(f"the KBS at {config.url} refused to store the key at {config.path}: "
                               f"{exc.kbs_variant}: {exc.detail} {token.refusal_hint()}") from None


def encrypt(config_text: str) -> bytes:
    config = parse_encrypt_config(config_text)
    plaintext = read_stdin()
    key = jwe.new_key()
    token = jwe.encrypt(key, config.header(), plaintext)
    try:
        asyncio.run(store_key(config, key))
    except ConfigError as exc:
        raise jwe.PinError(f"configuration: {exc.detail}") from None
    except jwe.PinError:
        raise
    except TrusteeError as exc:
        raise jwe.PinError(f"cannot store the key in the KBS: {exc.detail}") from None
    return token.encode("ascii")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--summary"]:
        print(SUMMARY)
        return 0
    if stdin_is_terminal() or not 1 <= len(args) <= 2 or (len(args) == 2 and args[1] != "-y"):
        print(USAGE, file=sys.stderr)
        return 2
    return run(PROG, lambda: encrypt(args[0]))


if __name__ == "__main__":
    raise SystemExit(main())
