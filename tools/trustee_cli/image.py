"""`trustee image encrypt`: encrypt every layer of an OCI layout image for attested guests (docs/encrypted-images.md).

    trustee image encrypt --input oci:DIR[:TAG] --output oci:NEWDIR[:TAG] --kbs-url URL
                          [--key-id kbs:///default/image-kek/NAME] [--recipient jwe:PUB.pem ...]

Each layer gets a fresh 32-byte key and 16-byte nonce (ocicrypt's
AES_256_CTR_HMAC_SHA256, `trustee_common.ocicrypt`). With `--kbs-url`, one
fresh 32-byte key-encryption key (KEK) per image wraps every layer's key
into the `attestation-agent` annotation, and the KEK is stored in the KBS
at the key id's path before the output appears; the guest's CDH fetches
it after attestation. Each `--recipient jwe:PUB.pem` also gets the layer
keys as a JWE (what `skopeo copy --decryption-key PRIV.pem` opens).

The input is only read. The output is built in a temporary directory
beside `--output` and renamed into place once the KBS holds the KEK, so a
failure leaves no output. The KEK touches the disk only with
`--keep-kek FILE` (created 0600, never overwritten). stdout: the key id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kbs_client.admin import AdminClient, KbsRefusedError
from kbs_client.auth import read_input_file, resolve_admin_token

from guest.resource_uri import ResourceUri
from trustee_cli.oci_layout import HashingWriter, LayoutRef, LayoutWriter, SourceImage, read_image
from trustee_common.b64 import std_encode
from trustee_common.errors import ConfigError, ImageIntegrityError, MalformedRequestError, UpstreamError
from trustee_common.ocicrypt import (
    JWE_ANNOTATION,
    PROVIDER_ANNOTATION,
    PUBOPTS_ANNOTATION,
    encrypt_layer,
    encrypted_descriptor,
    is_encrypted,
    wrap_for_recipients,
    wrap_private_options,
)

logger = logging.getLogger(__name__)

KEK_BYTES = 32
KEY_ID_PREFIX = "kbs:///default/image-kek/"


@dataclass(frozen=True)
class EncryptPlan:
    """What to do, once the flags are checked: `kid`/`kek` None when no KBS key wraps the layers."""

    source: LayoutRef
    output: LayoutRef
    kid: str | None
    kek: bytes | None
    recipients: tuple[bytes, ...]


def layout_ref(text: str) -> LayoutRef:
    try:
        return LayoutRef.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def kbs_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def recipient(text: str) -> str:
    if not text.startswith("jwe:") or len(text) == len("jwe:"):
        raise argparse.ArgumentTypeError(f"{text!r} is not jwe:PUBLIC-KEY.pem")
    return text.removeprefix("jwe:")


def key_id(text: str) -> str:
    """`kbs:///repo/type/tag` (the KBS resource path of the KEK)."""
    try:
        uri = ResourceUri.parse(text)
    except MalformedRequestError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None
    if not text.startswith("kbs:///") or uri.plugin != "resource" or uri.query or len(uri.path.split("/")) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not kbs:///<repository>/<type>/<tag>")
    return text


def add_image_parser(commands: Any) -> None:
    image = commands.add_parser("image", help="encrypt container images for attested guests")
    sub = image.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    enc = sub.add_parser("encrypt", help="encrypt every layer of an OCI layout image (key in the KBS and/or JWE recipients)")
    enc.add_argument("--input", required=True, type=layout_ref, metavar="oci:DIR[:TAG]", help="image to encrypt (read only)")
    enc.add_argument("--output", required=True, type=layout_ref, metavar="oci:DIR[:TAG]",
                     help="new layout to write (DIR must not exist; TAG defaults to the input's)")
    enc.add_argument("--kbs-url", type=kbs_url, help="KBS that stores the key-encryption key (needed unless every key goes to --recipient)")
    enc.add_argument("--key-id", type=key_id, help=f"KBS resource of the KEK (default {KEY_ID_PREFIX}<random uuid>)")
    token = enc.add_mutually_exclusive_group()
    token.add_argument("--admin-token-file", help="file holding a KBS admin token (default: found as kbs-client finds it)")
    token.add_argument("--auth-private-key", help="PEM key to sign a KBS admin token with")
    enc.add_argument("--kbs-cert", help="PEM root certificate of an https KBS")
    enc.add_argument("--recipient", action="append", default=[], type=recipient, metavar="jwe:PUB.pem",
                     help="also wrap the layer keys for this EC or RSA public key (repeatable)")
    enc.add_argument("--keep-kek", metavar="FILE", help="also write the 32-byte KEK to FILE (created with mode 0600)")
    enc.set_defaults(handler=cmd_image_encrypt, image_parser=enc)


def cmd_image_encrypt(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    parser = args.image_parser  # usage errors show `trustee image encrypt`'s usage
    if not args.kbs_url:
        for flag in ("key_id", "keep_kek", "admin_token_file", "auth_private_key", "kbs_cert"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} needs --kbs-url")
        if not args.recipient:
            parser.error("give --kbs-url (key held by the KBS), --recipient jwe:PUB.pem, or both")
    plan = _plan(args)
    if plan.output.path.resolve() == plan.source.path.resolve():
        raise ConfigError("--output must be a new directory, not the --input layout")
    if os.path.lexists(plan.output.path):
        raise ConfigError(f"--output {plan.output.path} exists; give a directory that does not")
    if args.keep_kek and os.path.lexists(args.keep_kek):
        raise ConfigError(f"--keep-kek {args.keep_kek} exists; refusing to overwrite a key file")
    source = read_image(plan.source)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{plan.output.path.name}.", suffix=".partial", dir=plan.output.path.parent))
    except OSError as exc:
        raise ConfigError(f"cannot create --output {plan.output.path}: {exc.strerror or exc}") from None
    try:
        manifest_digest = _write_encrypted(source, plan, LayoutWriter(tmp / "layout"))
        if plan.kek is not None and plan.kid is not None:
            asyncio.run(_store_kek(args, plan.kid, plan.kek))
            if args.keep_kek:
                _keep_kek(Path(args.keep_kek), plan.kek)
        os.rename(tmp / "layout", plan.output.path)
    except OSError as exc:
        where = exc.filename or plan.output.path
        raise ConfigError(f"image encrypt stopped at {where}: {exc.strerror or exc}; no output was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s (manifest %s)", plan.output.path, manifest_digest)
    if plan.kid is not None:
        print(plan.kid, flush=True)
    return 0


def _plan(args: argparse.Namespace) -> EncryptPlan:
    recipients = tuple(read_input_file(path, "--recipient") for path in args.recipient)
    for path, pem in zip(args.recipient, recipients, strict=True):
        try:
            wrap_for_recipients(b"{}", [pem])  # refuses an unusable key before any work
        except MalformedRequestError as exc:
            raise ConfigError(f"--recipient {path}: {exc.detail.split(': ', 1)[-1]}") from None
    output = args.output if args.output.tag else LayoutRef(args.output.path, args.input.tag or None)
    if not args.kbs_url:
        return EncryptPlan(args.input, output, None, None, recipients)
    return EncryptPlan(args.input, output, args.key_id or f"{KEY_ID_PREFIX}{uuid.uuid4()}", os.urandom(KEK_BYTES), recipients)


def _write_encrypted(source: SourceImage, plan: EncryptPlan, out: LayoutWriter) -> str:
    config = source.manifest["config"]
    out.copy_blob(source.blob(config.get("digest"), "image config"), config, "image config")
    layers = [_encrypt_one(source, plan, out, index, desc) for index, desc in enumerate(source.layers, 1)]
    tag = plan.output.tag or source.tag
    return out.finish({**source.manifest, "layers": layers}, source.entry, tag)


def _encrypt_one(source: SourceImage, plan: EncryptPlan, out: LayoutWriter, index: int, desc: dict[str, Any]) -> dict[str, Any]:
    if is_encrypted(desc):
        raise MalformedRequestError(f"layer {index} is already encrypted")
    blob = source.blob(desc.get("digest"), f"layer {index}")
    staged = out.staging(f"layer-{index}")
    try:
        with blob.open("rb") as src, staged.open("wb") as dst:
            sink = HashingWriter(dst)
            private, public = encrypt_layer(src, sink)
    except FileNotFoundError:
        raise ImageIntegrityError(f"layer {index}: blob {desc.get('digest')} is missing from {source.root}") from None
    if private.digest != desc.get("digest") or blob.stat().st_size != desc.get("size"):
        raise ImageIntegrityError(f"layer {index}: the blob is {private.digest} ({blob.stat().st_size} bytes), "
                                  f"its descriptor says {desc.get('digest')} ({desc.get('size')} bytes)")
    out.commit(staged, sink.digest)
    plbco = private.to_json()
    annotations = {PUBOPTS_ANNOTATION: public.to_annotation()}
    if plan.kek is not None and plan.kid is not None:
        annotations[PROVIDER_ANNOTATION] = wrap_private_options(plbco, plan.kek, plan.kid).to_annotation()
    if plan.recipients:
        annotations[JWE_ANNOTATION] = std_encode(wrap_for_recipients(plbco, list(plan.recipients)))
    try:
        return encrypted_descriptor(desc, sink.digest, sink.size, annotations)
    except MalformedRequestError as exc:
        raise MalformedRequestError(f"layer {index}: {exc.detail}") from None


async def _store_kek(args: argparse.Namespace, kid: str, kek: bytes) -> None:
    token = resolve_admin_token(args.auth_private_key, args.admin_token_file, os.environ)
    cert = read_input_file(args.kbs_cert, "--kbs-cert") if args.kbs_cert else None
    path = ResourceUri.parse(kid).path
    async with AdminClient(args.kbs_url, token=token.value, cert_pem=cert) as admin:
        try:
            await admin.set_resource(path, kek)
        except KbsRefusedError as exc:
            raise UpstreamError(f"the KBS at {args.kbs_url} refused to store the KEK at {path}: {exc.kbs_variant}: {exc.detail} "
                               f"{token.refusal_hint()}; no output was written") from None


def _keep_kek(path: Path, kek: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(kek)
