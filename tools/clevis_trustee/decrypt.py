"""`clevis-decrypt-trustee < JWE > PLAINTEXT` (run by `clevis decrypt`, which reads `clevis.pin`).

Reads the JWE header (`clevis_trustee.jwe`), asks the local Confidential
Data Hub for the key at `clevis.trustee.path` (attested: the KBS releases
it only when its resource policy allows this machine's attestation),
checks it is the key the JWE names (`kid`) and decrypts. The CDH address
is `CLEVIS_TRUSTEE_CDH` when set, else the header's `cdh`, else
`http://127.0.0.1:8006` (the guest REST API). Failures (policy deny, CDH
down, altered JWE, key replaced) print one line on stderr and exit 1;
nothing is written to stdout then. JWEs of latchset's clevis-pin-trustee
are read too (`clevis_trustee.jwe`).
"""

from __future__ import annotations

import asyncio
import os
import sys

from clevis_trustee import jwe
from clevis_trustee.cli import read_stdin, run, stdin_is_terminal
from clevis_trustee.config import CDH_ENV, DEFAULT_CDH, cdh_endpoint, resource_path
from clevis_trustee.fetch import fetch_key_resource
from trustee_common.errors import ConfigError

PROG = "clevis-decrypt-trustee"
USAGE = "\nUsage: clevis decrypt trustee < JWE > PLAINTEXT\n"


def decrypt() -> bytes:
    try:
        text = read_stdin().decode("ascii")
    except UnicodeDecodeError:
        raise jwe.PinError("input is not a compact JWE (not ASCII)") from None
    header = jwe.read_header(text)
    env_cdh = os.environ.get(CDH_ENV)
    try:
        path = resource_path(header.path, f"JWE header clevis.{jwe.PIN}.path")
        if env_cdh:
            endpoint = cdh_endpoint(env_cdh, CDH_ENV)
        else:
            endpoint = cdh_endpoint(header.cdh or DEFAULT_CDH, f"JWE header clevis.{jwe.PIN}.cdh")
    except ConfigError as exc:
        raise jwe.PinError(exc.detail) from None
    resource = asyncio.run(fetch_key_resource(endpoint, path))
    return jwe.decrypt(text, jwe.key_from_resource(resource, header), header)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--summary"]:
        return 2  # as clevis's own decrypt pins: `clevis` lists only the encrypt side
    if args or stdin_is_terminal():
        print(USAGE, file=sys.stderr)
        return 2
    return run(PROG, decrypt)


if __name__ == "__main__":
    raise SystemExit(main())
