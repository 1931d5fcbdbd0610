"""`rvps-tool`: register, query, list and delete reference values in an RVPS.

Upstream's commands and flags (trustee-server.md 7.5), plus TLS
(`--addr https://...` with `--ca`, and `--cert`/`--key` for mutual TLS),
`delete` and
a listing mode: `query` without `-r` prints every record as a JSON array
`[{"name", "value", "expiration"}, ...]` sorted by name. `query -r ID`
prints the stored value's JSON text. Exit codes: 0 ok, 1 failure
(`error: <Variant>: <detail>`), 2 usage error. The RPCs are in
`rvps_tool.client`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rvps_tool.client import RvpsClient
from trustee_common.addresses import GrpcEndpoint, grpc_endpoint
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.tls_config import ClientTls

DEFAULT_ADDR = "127.0.0.1:50003"

Handler = Callable[[RvpsClient, argparse.Namespace], Coroutine[Any, Any, "str | None"]]


def grpc_address(text: str) -> GrpcEndpoint:
    """`host:port`, `http://host:port` (plain text) or `https://host:port` (TLS)."""
    try:
        return grpc_endpoint(text, "--addr")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r}: use host:port, http://host:port or https://host:port") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvps-tool", description="Client of a Reference Value Provider Service.")
    addr = argparse.ArgumentParser(add_help=False)
    addr.add_argument("-a", "--addr", type=grpc_address, default=os.environ.get("RVPS_TOOL_ADDR", DEFAULT_ADDR),
                      help="RVPS gRPC address, host:port, http://host:port or https://host:port (TLS) "
                           f"(env RVPS_TOOL_ADDR; default {DEFAULT_ADDR})")
    addr.add_argument("--ca", help="https:// only: PEM CA certificate of the RVPS's (or AS's) TLS certificate (default: system roots)")
    addr.add_argument("--cert", help="https:// only: PEM client certificate for mutual TLS (with --key)")
    addr.add_argument("--key", help="https:// only: PEM private key of --cert")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    register = commands.add_parser("register", parents=[addr], help="register the reference values in a message file")
    register.add_argument("-p", "--path", required=True, help='message JSON file: {"version": "0.1.0", "type": ..., "payload": ...}')
    register.set_defaults(handler=cmd_register)

    query = commands.add_parser("query", parents=[addr], help="print one reference value, or list them all (JSON)")
    query.add_argument("-r", "--reference-value-id", help="name of the reference value (omit to list every one)")
    query.set_defaults(handler=cmd_query)

    delete = commands.add_parser("delete", parents=[addr], help="delete one reference value")
    delete.add_argument("-r", "--reference-value-id", required=True, help="name of the reference value")
    delete.set_defaults(handler=cmd_delete)
    return parser


def read_message(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --path {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--path {path} is not UTF-8 text") from None


async def cmd_register(client: RvpsClient, args: argparse.Namespace) -> None:
    await client.register(read_message(args.path))
    print(f"OK: registered the reference values in {args.path}", file=sys.stderr)


async def cmd_query(client: RvpsClient, args: argparse.Namespace) -> str:
    if args.reference_value_id is not None:
        return await client.query(args.reference_value_id)
    return json.dumps([record.to_json() for record in await client.list()], indent=2)


async def cmd_delete(client: RvpsClient, args: argparse.Namespace) -> None:
    await client.delete(args.reference_value_id)
    print(f"OK: deleted {args.reference_value_id}", file=sys.stderr)


def client_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ClientTls | None:
    """The --ca/--cert/--key files, checked against the address's scheme."""
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    given = [flag for flag in ("ca", "cert", "key") if getattr(args, flag)]
    if not args.addr.tls:
        if given:
            parser.error(f"--{given[0]} needs an https:// --addr")
        return None
    return ClientTls(*(Path(p) if p else None for p in (args.ca, args.cert, args.key)))


async def _run(handler: Handler, args: argparse.Namespace, tls: ClientTls | None) -> str | None:
    async with RvpsClient(args.addr, tls) as client:
        return await handler(client, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tls = client_tls(parser, args)
    try:
        output = asyncio.run(_run(args.handler, args, tls))
    except TrusteeError as exc:
        print(f"error: {exc.variant}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if output is not None:
        sys.stdout.write(output if output.endswith("\n") else output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
