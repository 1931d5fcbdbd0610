"""`confidential-data-hub`: the gRPC Confidential Data Hub.

```
confidential-data-hub [-c|--config cdh.toml]
```

Composition root: reads the config (or `AA_KBC_PARAMS`), wires the hub to
the AA client and the KBS adapter, and serves `socket` until SIGTERM/SIGINT
(exit 0). A bad config stops start-up with a message naming the key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from guest.attestation_agent.client import AaClient
from guest.attestation_agent.serving import apply_log_level, read_kbc_params
from guest.cdh.config import CdhConfig, config_from_kbc_params, parse_config
from guest.cdh.hub import ResourceHub
from guest.cdh.image_keys import LayerKeys
from guest.cdh.images import ImagePuller
from guest.cdh.kbs import AaTokenSource, PassportKbs
from guest.cdh.sealed import MAX_KEY_BYTES
from guest.cdh.service import SERVICE_NAME, make_server
from guest.cdh.unseal import KeyRing, Unsealer, is_kbs_uri
from trustee_common.config import load_config_file
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.logsetup import setup_logging
from trustee_common.serving import serve_grpc

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confidential-data-hub", description="Confidential Data Hub (gRPC)")
    parser.add_argument("-c", "--config", type=Path, help="CDH config file (TOML, or JSON by extension)")
    return parser


def load_config(path: Path | None) -> CdhConfig:
    if path is not None:
        return parse_config(load_config_file(path))
    return config_from_kbc_params(*read_kbc_params())


def load_key_ring(entries: tuple[str, ...]) -> KeyRing:
    """The sealed-secret verification keys: file entries are read now, KBS ones at each unseal."""
    contents: dict[str, bytes] = {}
    for entry in entries:
        if is_kbs_uri(entry):
            continue
        try:
            with Path(entry).open("rb") as file:
                contents[entry] = file.read(MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"sealed_secret.verification_keys: cannot read {entry}: {exc.strerror}") from exc
    ring = KeyRing.from_config(list(entries), contents)
    if not ring:
        logger.info("no sealed-secret verification key configured: UnsealSecret refuses every secret")
    return ring


async def serve(config: CdhConfig) -> None:
    aa = AaClient(config.aa_socket)
    kbs = None if config.kbc is None else PassportKbs(config.kbc.url, config.kbc.kbs_cert)
    if config.kbc is None:
        logger.warning("no KBC configured: GetResource will fail until [kbc] or AA_KBC_PARAMS is set")
    else:
        logger.info("KBS at %s, tokens from the attestation agent at %s", config.kbc.url, aa.target)
    hub = ResourceHub(AaTokenSource(aa), kbs)
    unsealer = Unsealer(load_key_ring(config.verification_keys), hub)
    keys = LayerKeys(hub, config.image.decryption_keys)
    puller = ImagePuller(config.image, hub, keys, aa)
    try:
        await serve_grpc(make_server(hub, unsealer, keys, puller), config.socket, "confidential-data-hub", [SERVICE_NAME])
    finally:
        await aa.close()


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        apply_log_level(config.log_level)
        asyncio.run(serve(config))
    except TrusteeError as exc:
        logger.error("%s", exc.detail)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
