"""`trustee`: one command for a local Trustee (`run`), a guest stack (`guest`; `guest pull-image` asks its CDH
to pull an image), storage migration (`migrate`), image encryption (`image encrypt`), or the init-data
digest a host binds to a guest (`initdata digest`).

This module parses and checks the flags, then hands over to
`trustee_cli.server.run_server` or `trustee_cli.guest.run_guest`. Exit
codes: 0 stopped by Ctrl-C/SIGTERM, 1 failure (`error: <detail>` on
stderr, e.g. a port in use or a child that died), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from guest.cdh.client import CdhClient
from guest.resource_uri import ResourceUri
from trustee_cli.configs import LOOPBACK, GuestSettings, ServerSettings, socket_address
from trustee_cli.guest import run_guest
from trustee_cli.image import add_image_parser
from trustee_cli.initdata import add_initdata_parser, guest_init_data
from trustee_cli.migrate import migrate
from trustee_cli.server import run_server
from trustee_cli.snp_measure import add_snp_measure_parser
from trustee_cli.verify import add_verify_parser
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.logsetup import FORMATS
from trustee_common.storage.factory import check_postgres_url
from trustee_common.workers import check_count, default_as_workers

DEFAULT_DATA_DIR = "./trustee-data"
DEFAULT_GUEST_DIR = "./trustee-guest"

Handler = Callable[[argparse.ArgumentParser, argparse.Namespace], int]


def port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def host_address(text: str) -> str:
    if text == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def storage_url(text: str) -> str:
    if text.lower() == "sqlite":
        return "sqlite"
    try:
        return check_postgres_url(text, "--storage")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{exc.detail} (or 'sqlite')") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trustee", description="Run a local Trustee (KBS, AS, RVPS) or the guest components.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start RVPS, AS and KBS")
    run.add_argument("--data-dir", default=os.environ.get("TRUSTEE_DATA_DIR", DEFAULT_DATA_DIR),
                     help=f"keys, configs, storage and logs (env TRUSTEE_DATA_DIR; default {DEFAULT_DATA_DIR})")
    run.add_argument("--kbs-port", type=port, default=8080, help="KBS HTTP port (default 8080)")
    run.add_argument("--as-port", type=port, default=50004, help="Attestation Service gRPC port on 127.0.0.1 (default 50004)")
    run.add_argument("--rvps-port", type=port, default=50003, help="RVPS gRPC port on 127.0.0.1 (default 50003)")
    run.add_argument("--host", type=host_address, default="127.0.0.1", help="KBS listen address (default 127.0.0.1)")
    run.add_argument("--insecure-http", action="store_true", help="allow plain HTTP on a non-loopback --host")
    run.add_argument("--tls-cert", help="PEM certificate chain for HTTPS (with --tls-key)")
    run.add_argument("--tls-key", help="PEM private key for HTTPS (with --tls-cert)")
    run.add_argument("--tls", action="store_true",
                     help="generate (once) a local CA and certificates under <data-dir>/tls: HTTPS for the KBS (unless --tls-cert) "
                          "and mutual TLS from KBS to AS to RVPS")
    run.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                     help="with --tls: another DNS name or IP address for the KBS certificate (repeatable)")
    run.add_argument("--storage", type=storage_url, default="sqlite",
                     help="'sqlite' (default: embedded, under --data-dir) or a postgresql:// URL used by all three services")
    run.add_argument("--log-format", choices=FORMATS, help="log format of the three services (default: $TRUSTEE_LOG_FORMAT, else text)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="processes of the KBS and of the AS, each sharing its port (default: $TRUSTEE_WORKERS, else the available "
                          "cores for the KBS and half of them for the AS)")
    run.add_argument("--as", dest="attestation", choices=("grpc", "builtin"), default="grpc",
                     help="grpc (default): AS and RVPS processes; builtin: the AS inside the KBS (coco_as_builtin), no AS or RVPS process")
    run.set_defaults(handler=cmd_run)

    migrate = commands.add_parser("migrate", help="copy all stored state between a data directory or SQLite file and PostgreSQL")
    where = "postgresql:// URL, SQLite file (*.sqlite3) or trustee data directory"
    migrate.add_argument("--from", dest="source", required=True, help=where)
    migrate.add_argument("--to", dest="dest", required=True, help=where)
    migrate.add_argument("--resources", type=Path, help="resource directory of the SQLite-file side (data directories use kbs/repository)")
    migrate.set_defaults(handler=cmd_migrate)

    guest = commands.add_parser("guest", help="start attestation-agent, confidential-data-hub and api-server-rest")
    guest.add_argument("--kbs-url", type=http_url, default=os.environ.get("TRUSTEE_KBS_URL"),
                       help="KBS base URL (env TRUSTEE_KBS_URL; required to start the guest stack)")
    guest.add_argument("--rest-port", type=port, default=8006, help="REST API port (default 8006)")
    guest.add_argument("--aa-port", type=port, default=50002, help="attestation-agent gRPC port (default 50002)")
    guest.add_argument("--cdh-port", type=port, default=50000, help="confidential-data-hub gRPC port (default 50000)")
    guest.add_argument("--kbs-cert", help="PEM root certificate of an https KBS")
    guest.add_argument("--sealed-secret-key", action="append", default=[], metavar="KEY", type=sealed_secret_key,
                       help="a key sealed secrets may be signed with: a kbs:///... resource or a PEM/JWK file (repeatable; "
                            "without one, sealed secrets are refused; docs/sealed-secrets.md)")
    guest.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                       help="a registry the CDH may pull images from over plain HTTP (repeatable)")
    guest.add_argument("--image-decryption-key", action="append", default=[], metavar="kbs:///...", type=kbs_uri,
                       help="a KBS resource holding a private key for JWE-encrypted image layers (repeatable; "
                            "docs/encrypted-images.md)")
    guest.add_argument("--initdata-toml", type=Path, metavar="FILE",
                       help="init-data TOML the attestation-agent binds and sends to the KBS; its aa.toml KBS url and cert "
                            "stand in for --kbs-url/--kbs-cert and must equal them when both are given (docs/kubevirt-tdx.md)")
    guest.add_argument("--data-dir", default=os.environ.get("TRUSTEE_GUEST_DATA_DIR", DEFAULT_GUEST_DIR),
                       help=f"generated configs and logs (env TRUSTEE_GUEST_DATA_DIR; default {DEFAULT_GUEST_DIR})")
    guest.set_defaults(handler=cmd_guest)
    guest_commands = guest.add_subparsers(dest="guest_command", metavar="COMMAND")
    pull = guest_commands.add_parser("pull-image", help="ask the running guest's CDH to pull and unpack an image (ImagePullService)")
    pull.add_argument("image", help="image reference, e.g. registry.example:5000/app:v1")
    pull.add_argument("--bundle", required=True, type=Path, help="bundle directory: the image is unpacked into BUNDLE/rootfs")
    pull.add_argument("--cdh-addr", help="the CDH's gRPC address (default: 127.0.0.1 and trustee guest's --cdh-port)")
    pull.set_defaults(handler=cmd_pull_image)
    add_verify_parser(commands)
    add_snp_measure_parser(commands)
    add_image_parser(commands)
    add_initdata_parser(commands)
    return parser


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _check_tls(cert: str, key: str) -> None:
    try:
        x509.load_pem_x509_certificates(_read(cert, "--tls-cert"))
    except ValueError:
        raise ConfigError(f"--tls-cert {cert} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(_read(key, "--tls-key"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"--tls-key {key} is not an unencrypted PEM private key") from None


def _san(parser: argparse.ArgumentParser, name: str) -> str:
    """An IP literal (normalised) or a DNS name."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name or not all(label and len(label) < 64 and label.replace("-", "").isalnum() for label in labels):
        parser.error(f"--tls-san {name!r} is neither an IP address nor a DNS name")
    return name.rstrip(".").lower()


def _distinct(parser: argparse.ArgumentParser, **ports: int) -> None:
    if len(set(ports.values())) != len(ports):
        parser.error("the ports must differ: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in ports.items()))


def cmd_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _distinct(parser, kbs_port=args.kbs_port, as_port=args.as_port, rvps_port=args.rvps_port)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = bool(args.tls_cert)
    if (tls or args.tls) and args.insecure_http:
        parser.error("--insecure-http cannot be combined with --tls or --tls-cert/--tls-key")
    if args.tls_san and not args.tls:
        parser.error("--tls-san needs --tls")
    if not (tls or args.tls) and not args.insecure_http and not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"refusing plain HTTP on the non-loopback address {args.host}: give --tls (or --tls-cert and --tls-key), "
                     "or --insecure-http")
    if tls:
        _check_tls(args.tls_cert, args.tls_key)
    if args.workers is not None:
        check_count(args.workers, "--workers")
    settings = ServerSettings(args.host, args.kbs_port, args.as_port, args.rvps_port,
                              Path(args.tls_cert).absolute() if tls else None, Path(args.tls_key).absolute() if tls else None,
                              None if args.storage == "sqlite" else args.storage, args.tls, tuple(_san(parser, n) for n in args.tls_san),
                              args.log_format, args.workers, args.attestation == "builtin", default_as_workers())
    return run_server(Path(args.data_dir), settings, insecure_http=args.insecure_http)


def sealed_secret_key(text: str) -> str:
    """A `kbs:///` URI as given, or an existing file made absolute (the CDH's `verification_keys` takes absolute paths)."""
    if text.startswith("kbs://"):
        return text
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a kbs:///... URI nor an existing file")
    return str(path.resolve())


def kbs_uri(text: str) -> str:
    try:
        ResourceUri.parse(text)
    except TrusteeError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None
    return text


def cmd_pull_image(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    address = args.cdh_addr or socket_address(LOOPBACK, args.cdh_port)

    async def pull() -> str:
        client = CdhClient(address)
        try:
            return await client.pull_image(args.image, str(args.bundle.resolve()))
        finally:
            await client.close()

    print(asyncio.run(pull()), flush=True)
    return 0


def cmd_guest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not args.kbs_url and args.initdata_toml is None:
        parser.error("trustee guest: --kbs-url (or TRUSTEE_KBS_URL) is required")
    _distinct(parser, rest_port=args.rest_port, aa_port=args.aa_port, cdh_port=args.cdh_port)
    cert_pem = None
    if args.kbs_cert:
        cert_pem = _read(args.kbs_cert, "--kbs-cert").decode("utf-8", errors="replace")
        if "-----BEGIN CERTIFICATE-----" not in cert_pem:
            raise ConfigError(f"--kbs-cert {args.kbs_cert} holds no PEM certificate")
    kbs_url, init_data = args.kbs_url, None
    if args.initdata_toml is not None:
        bound = guest_init_data(args.initdata_toml, kbs_url, cert_pem)
        kbs_url, cert_pem, init_data = bound.kbs_url, bound.kbs_cert_pem, str(bound.path)
        if not kbs_url:
            parser.error("trustee guest: give --kbs-url, or an --initdata-toml whose aa.toml has [token_configs.kbs] url")
        try:
            kbs_url = http_url(kbs_url)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--initdata-toml {args.initdata_toml}: aa.toml [token_configs.kbs] url: {exc}") from None
    settings = GuestSettings(kbs_url, args.rest_port, args.aa_port, args.cdh_port, cert_pem, tuple(args.sealed_secret_key),
                             tuple(args.insecure_registry), tuple(args.image_decryption_key),
                             str(Path(args.data_dir).resolve() / "image"), init_data)
    return run_guest(Path(args.data_dir), settings)


def cmd_migrate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    print(asyncio.run(migrate(args.source, args.dest, resources=args.resources)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(parser, args)
    except TrusteeError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
