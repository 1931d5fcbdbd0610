"""`kbs-client`: attest to a KBS, fetch resources, and drive its admin API.

Commands and flags follow upstream's `tools/kbs-client` (trustee-server.md
11) with the same spelling and defaults; docs/compatibility.md lists each
and where this client differs. Results go to stdout (the token, base64 of
a resource, a policy, a reference value); status lines, warnings and
errors go to stderr. Exit codes: 0 ok, 1 failure (`error: <Variant>:
<detail>`, the KBS error type when the KBS refused), 2 usage error. This
module only parses and dispatches: the protocol is `guest.kbs_protocol`,
the admin calls are `kbs_client.admin`, the admin token `kbs_client.auth`.

Beyond upstream: `--url`/`--cert-file` are also accepted after the
command (upstream's docs/cluster.md writes `kbs-client config --url ...`),
`config get-resource-policy`, `config get-attestation-reports` (docs/attestation-reports.md), `-v`, and environment fallbacks for the
flags. Upstream's removed `config get-reference-values` (v0.13 - v0.17)
is refused with the command to use instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from guest.attesters import detect_attesters
from guest.kbs_protocol import AttesterEvidence, KbsClient
from kbs.core.reports import verify_report
from kbs_client.admin import AdminClient, KbsRefusedError
from kbs_client.auth import AdminToken, read_input_file, resolve_admin_token
from kbs_client.policies import BUILTIN_POLICIES, POLICY_TYPE
from kbs_client.seal import SealRequest, seal
from trustee_common.b64 import std_encode
from trustee_common.errors import TrusteeError
from trustee_common.jose import TeeKeyPair

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_ATTESTATION_POLICY_ID = "default_cpu"
VERSION = "0.1.0"
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]+$")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, "str | None"]]


class UsageError(Exception):
    """A flag combination or value argparse cannot check by itself (exit 2)."""


# --- argument types ------------------------------------------------------------


def kbs_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def resource_path(text: str) -> str:
    segments = text.strip("/").split("/")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise argparse.ArgumentTypeError(f"{text!r} is not <repository>/<type>/<tag> (letters, digits, _ - .)")
    return "/".join(segments)


# --- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbs-client", description="Client of a Key Broker Service (KBS protocol 0.4.0).")
    parser.add_argument("--url", type=kbs_url, default=os.environ.get("KBS_CLIENT_URL", DEFAULT_URL),
                        help=f"KBS base URL (env KBS_CLIENT_URL; default {DEFAULT_URL})")
    parser.add_argument("--cert-file", default=os.environ.get("KBS_CLIENT_CERT_FILE"),
                        help="PEM root certificate for an https KBS (env KBS_CLIENT_CERT_FILE)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr: -v info (e.g. the attester used), -vv debug")
    parser.add_argument("-V", "--version", action="version", version=f"kbs-client {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    attest = commands.add_parser("attest", help="attest with the local attester and print the attestation token")
    _add_late_connection_flags(attest)
    attest.add_argument("--tee-key-file", help="PEM private key (EC P-256/P-521 or RSA) to bind as the TEE key")
    attest.add_argument("init_data", nargs="?", metavar="INIT_DATA", help="init-data TOML text to send with the evidence")
    attest.set_defaults(handler=cmd_attest)

    get = commands.add_parser("get-resource", help="fetch a resource and print it as standard base64")
    _add_late_connection_flags(get)
    get.add_argument("--path", required=True, type=resource_path, help="<repository>/<type>/<tag>")
    get.add_argument("--tee-key-file", help="PEM private key of the TEE key (mandatory with --attestation-token)")
    get.add_argument("--attestation-token", help="file holding a token from `attest` (passport mode: no attestation)")
    get.add_argument("init_data", nargs="?", metavar="INIT_DATA", help="init-data TOML text to send with the evidence")
    get.set_defaults(handler=cmd_get_resource)

    config = commands.add_parser("config", help="admin operations (need an admin token)")
    _add_late_connection_flags(config)
    auth = config.add_mutually_exclusive_group()
    auth.add_argument("--auth-private-key",
                      help="Ed25519, EC P-256/P-384 or RSA PEM private key: sign a 5-minute admin token (role admin) with it "
                           "(env KBS_CLIENT_AUTH_PRIVATE_KEY)")
    auth.add_argument("--admin-token-file",
                      help="file holding an admin JWT (env KBS_CLIENT_ADMIN_TOKEN_FILE). Without either flag: the first "
                           "existing of kbs/config/docker-compose/admin-token (relative to the working directory), "
                           "$TRUSTEE_DATA_DIR/admin/token (default ./trustee-data/admin/token) and "
                           "$HOME/.trustee/admin-token; otherwise no Authorization header")
    _add_config_commands(config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND"))
    return parser


def _add_late_connection_flags(parser: argparse.ArgumentParser) -> None:
    """`--url`/`--cert-file` after the command too (as upstream's docs/cluster.md writes them); they win over earlier ones."""
    parser.add_argument("--url", type=kbs_url, default=argparse.SUPPRESS, help="same as --url before the command")
    parser.add_argument("--cert-file", default=argparse.SUPPRESS, help="same as --cert-file before the command")


def _add_config_commands(sub: Any) -> None:
    p = sub.add_parser("set-resource", help="store a resource")
    p.add_argument("--path", required=True, type=resource_path, help="<repository>/<type>/<tag>")
    p.add_argument("--resource-file", required=True, help="file with the resource bytes")
    p.set_defaults(handler=cmd_set_resource)

    p = sub.add_parser("delete-resource", help="delete a resource")
    p.add_argument("--path", required=True, type=resource_path, help="<repository>/<type>/<tag>")
    p.set_defaults(handler=cmd_delete_resource)

    p = sub.add_parser("get-resource-policy", help="print the resource policy (Rego)")
    p.set_defaults(handler=cmd_get_resource_policy)

    p = sub.add_parser("set-resource-policy", help="set the resource policy")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--policy-file", help="Rego file (package policy)")
    for flag, key, text in (("--allow-all", "allow_all", "release every resource to every attested guest"),
                            ("--deny-all", "deny_all", "release nothing"),
                            ("--affirming", "affirming", "release when every submod's ear.status is affirming"),
                            ("--default", "default",
                             "the KBS's built-in default policy: release to a non-sample TEE whose cpu0 EAR status is not "
                             "contraindicated. Differs from upstream's current client, which uploads deny-all here "
                             "against its own help text (its v0.17 and earlier uploaded the KBS default, as this does)")):
        which.add_argument(flag, dest="builtin", action="store_const", const=key, help=text)
    p.set_defaults(handler=cmd_set_resource_policy)

    p = sub.add_parser("set-attestation-policy", help="set an attestation (EAR appraisal) policy in the AS")
    p.add_argument("--policy-file", required=True, help="Rego file")
    p.add_argument("--type", default=POLICY_TYPE,
                   help=f"policy format (default {POLICY_TYPE}). Any value is accepted, as upstream, whose KBS ignores "
                        f"it: policies are always Rego, so the request always says {POLICY_TYPE!r}; a value other "
                        f"than {POLICY_TYPE!r} in any case gets a warning")
    p.add_argument("--id", default=DEFAULT_ATTESTATION_POLICY_ID, help=f"policy id (default {DEFAULT_ATTESTATION_POLICY_ID})")
    p.set_defaults(handler=cmd_set_attestation_policy)

    p = sub.add_parser("set-sample-reference-value", help="register a reference value through the KBS")
    p.add_argument("name", metavar="NAME")
    p.add_argument("value", metavar="VALUE")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--as-integer", action="store_true", help="VALUE is an integer (default: a string)")
    kind.add_argument("--as-bool", action="store_true", help="VALUE is true or false")
    p.add_argument("--as-single-value", action="store_true", help="store VALUE itself, not a one-element list")
    p.set_defaults(handler=cmd_set_sample_reference_value)

    p = sub.add_parser("get-reference-value", help="print a reference value (JSON)")
    p.add_argument("--id", required=True, help="reference value name")
    p.set_defaults(handler=cmd_get_reference_value)

    p = sub.add_parser("get-attestation-reports", help="print signed attestation reports, newest first (JSON lines)")
    p.add_argument("--instance-id", help="only this instance's reports (init-data [data] instance_id)")
    p.add_argument("--since", help="only reports at or after this time (seconds since the epoch, or RFC 3339)")
    p.add_argument("--limit", type=int, default=50, help="reports per page (1-500; default 50)")
    p.add_argument("--all", action="store_true", help="follow the cursor through every page")
    p.add_argument("--verify", action="store_true", help="verify each report's signature and x5c chain; print its claims")
    p.add_argument("--cert-chain", help="with --verify: PEM trust anchors, e.g. <data-dir>/as/ca.pem")
    p.set_defaults(handler=cmd_get_attestation_reports)

    p = sub.add_parser("get-reference-values", help="refused: removed upstream in v0.18; use get-reference-value --id NAME")
    p.set_defaults(handler=cmd_get_reference_values)

    _add_seal_secret(sub)


def _add_seal_secret(sub: Any) -> None:
    p = sub.add_parser("seal-secret", help="print a signed sealed secret for the CDH (local: contacts no KBS; docs/sealed-secrets.md)")
    p.add_argument("--type", required=True, choices=("vault", "envelope"), dest="secret_type",
                   help="vault: the secret is the KBS resource --resource-uri; envelope: the secret is --file-path, encrypted")
    p.add_argument("--signing-key", "--signing-jwk-path", required=True, dest="signing_key",
                   help="EC P-256 private key, PEM or JWK (upstream's --signing-jwk-path)")
    p.add_argument("--signing-kid", required=True,
                   help="key id the CDH knows the public key by: its kbs:/// URI, or its file name in "
                        "sealed_secret.verification_keys")
    p.add_argument("--resource-uri", help="vault: kbs:///<repository>/<type>/<tag> of the secret value")
    p.add_argument("--key-id", help="envelope: kbs:///<repository>/<type>/<tag> of the 32-byte key encryption key")
    p.add_argument("--kek-file", help="envelope: the operator's copy of that key (32 raw bytes)")
    p.add_argument("--file-path", help="envelope: file with the secret value")
    p.set_defaults(handler=cmd_seal_secret)


# --- guest-side commands -------------------------------------------------------


def _cert(args: argparse.Namespace) -> bytes | None:
    return read_input_file(args.cert_file, "--cert-file") if args.cert_file else None


def _key_pair(path: str | None) -> TeeKeyPair | None:
    return TeeKeyPair.from_pem(read_input_file(path, "--tee-key-file")) if path else None


def _evidence_client(args: argparse.Namespace) -> KbsClient:
    primary, devices = detect_attesters()
    evidence = AttesterEvidence(primary, devices)
    return KbsClient(args.url, evidence=evidence, key_pair=_key_pair(args.tee_key_file), init_data_toml=args.init_data,
                     cert_pem=_cert(args))


async def cmd_attest(args: argparse.Namespace) -> str:
    async with _evidence_client(args) as client:
        return await client.attest()


async def cmd_get_resource(args: argparse.Namespace) -> str:
    if args.attestation_token:
        if not args.tee_key_file:
            raise UsageError("--attestation-token needs --tee-key-file (the key the token was issued for)")
        if args.init_data is not None:
            raise UsageError("INIT_DATA is sent when attesting; with --attestation-token nothing is attested")
        token = read_input_file(args.attestation_token, "--attestation-token").decode("utf-8", errors="replace").strip()
        client = KbsClient(args.url, token=token, key_pair=_key_pair(args.tee_key_file), cert_pem=_cert(args))
    else:
        client = _evidence_client(args)
    async with client:
        return std_encode(await client.get_resource(f"resource/{args.path}"))


# --- admin commands ------------------------------------------------------------


def _admin(args: argparse.Namespace) -> AdminClient:
    """The admin client; the token's provenance stays on `args` for the refusal message (see `main`)."""
    admin_token = resolve_admin_token(args.auth_private_key, args.admin_token_file, os.environ)
    args.admin_token = admin_token
    return AdminClient(args.url, token=admin_token.value, cert_pem=_cert(args))


def _ok(message: str) -> None:
    print(f"OK: {message}", file=sys.stderr)


async def cmd_set_resource(args: argparse.Namespace) -> None:
    content = read_input_file(args.resource_file, "--resource-file")
    async with _admin(args) as admin:
        await admin.set_resource(args.path, content)
    _ok(f"resource {args.path} set ({len(content)} bytes)")


async def cmd_delete_resource(args: argparse.Namespace) -> None:
    async with _admin(args) as admin:
        await admin.delete_resource(args.path)
    _ok(f"resource {args.path} deleted")


async def cmd_get_resource_policy(args: argparse.Namespace) -> str:
    async with _admin(args) as admin:
        return await admin.get_resource_policy()


def _text_file(path: str, flag: str) -> str:
    return read_input_file(path, flag).decode("utf-8", errors="replace")


async def cmd_set_resource_policy(args: argparse.Namespace) -> None:
    policy = _text_file(args.policy_file, "--policy-file") if args.policy_file else BUILTIN_POLICIES[args.builtin]
    async with _admin(args) as admin:
        await admin.set_resource_policy(policy)
    _ok(f"resource policy set ({args.policy_file or args.builtin})")


async def cmd_set_attestation_policy(args: argparse.Namespace) -> None:
    if args.type.strip().lower() != POLICY_TYPE:
        print(f"warning: --type {args.type!r}: attestation policies are always Rego; sending type {POLICY_TYPE!r} "
              "(upstream's KBS ignores the field)", file=sys.stderr)
    policy = _text_file(args.policy_file, "--policy-file")
    async with _admin(args) as admin:
        await admin.set_attestation_policy(policy, POLICY_TYPE, args.id)
    _ok(f"attestation policy {args.id} set")


def sample_value(args: argparse.Namespace) -> Any:
    """VALUE as upstream: a string unless --as-integer/--as-bool, in a one-element list unless --as-single-value."""
    value: Any = args.value
    if args.as_integer:
        try:
            value = int(args.value)
        except ValueError:
            raise UsageError(f"--as-integer: {args.value!r} is not an integer") from None
    elif args.as_bool:
        if args.value not in ("true", "false"):
            raise UsageError(f"--as-bool: {args.value!r} is not true or false")
        value = args.value == "true"
    return value if args.as_single_value else [value]


async def cmd_set_sample_reference_value(args: argparse.Namespace) -> None:
    value = sample_value(args)
    async with _admin(args) as admin:
        await admin.register_sample_reference_value(args.name, value)
    _ok(f"reference value {args.name} = {json.dumps(value)} registered")


async def cmd_get_reference_value(args: argparse.Namespace) -> str:
    async with _admin(args) as admin:
        return json.dumps(await admin.get_reference_value(args.id))


def _report_anchors(args: argparse.Namespace) -> list[x509.Certificate] | None:
    if not args.verify:
        if args.cert_chain:
            raise UsageError("--cert-chain goes with --verify")
        return None
    if not args.cert_chain:
        raise UsageError("--verify needs --cert-chain PEM (the AS's CA, e.g. <data-dir>/as/ca.pem)")
    try:
        return x509.load_pem_x509_certificates(read_input_file(args.cert_chain, "--cert-chain"))
    except ValueError:
        raise UsageError(f"--cert-chain: {args.cert_chain} holds no PEM certificate") from None


async def cmd_get_attestation_reports(args: argparse.Namespace) -> str:
    """One line per report: the compact JWS, or with --verify its verified claims (JSON); then the next cursor, if any."""
    anchors = _report_anchors(args)
    query = {key: value for key, value in (("instance_id", args.instance_id), ("since", args.since)) if value}
    query["limit"] = str(args.limit)
    lines: list[str] = []
    async with _admin(args) as admin:
        while True:
            body = await admin.get_attestation_reports(query)
            for report in body.get("reports", []) if isinstance(body, dict) else []:
                lines.append(report if anchors is None else json.dumps(verify_report(report, anchors, time.time()), sort_keys=True))
            cursor = body.get("next_cursor") if isinstance(body, dict) else None
            if not cursor or not args.all:
                break
            query["cursor"] = cursor
    if cursor and not args.all:
        print(f"more: --all, or GET attestation-reports?cursor={cursor}", file=sys.stderr)
    return "\n".join(lines)


async def cmd_get_reference_values(args: argparse.Namespace) -> None:
    raise UsageError("get-reference-values was removed from upstream's kbs-client in v0.18 and the KBS has no list "
                     "endpoint: use `config get-reference-value --id NAME` (or `rvps-tool query` to list them all)")


async def cmd_seal_secret(args: argparse.Namespace) -> str:
    vault = args.secret_type == "vault"  # noqa: S105 (a type name, not a password)
    needed = ("resource_uri",) if vault else ("key_id", "kek_file", "file_path")
    missing = [f"--{name.replace('_', '-')}" for name in needed if getattr(args, name) is None]
    if missing:
        raise UsageError(f"--type {args.secret_type} needs {', '.join(missing)}")
    request = SealRequest(
        kind=args.secret_type,
        signing_key_pem=read_input_file(args.signing_key, "--signing-key"),
        signing_kid=args.signing_kid,
        resource_uri=args.resource_uri,
        key_id=args.key_id,
        kek=read_input_file(args.kek_file, "--kek-file") if args.kek_file else None,
        plaintext=read_input_file(args.file_path, "--file-path") if args.file_path else None,
    )
    return seal(request)


# --- entry point ---------------------------------------------------------------


def _setup_logging(verbose: int) -> None:
    """Errors only by default (as upstream's env_logger); -v adds warnings and info (e.g. the sample-attester notice)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.ERROR
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _error_line(exc: TrusteeError, admin_token: AdminToken | None) -> str:
    """`<Variant>: <detail>`; an admin refusal (401/403) also says which token was sent, or where none was found."""
    if not isinstance(exc, KbsRefusedError):
        return f"{exc.variant}: {exc.detail}"
    hint = f" {admin_token.refusal_hint()}" if admin_token is not None and exc.status in (401, 403) else ""
    return f"{exc.kbs_variant}: {exc.detail}{hint}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        output: str | None = asyncio.run(handler(args))
    except UsageError as exc:
        parser.error(str(exc))
    except TrusteeError as exc:
        print(f"error: {_error_line(exc, getattr(args, 'admin_token', None))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if output is not None:
        sys.stdout.write(output if output.endswith("\n") else output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
