"""`attestation-agent`: the gRPC Attestation Agent (upstream `grpc-aa` flags).

```
attestation-agent [-a|--attestation_sock 127.0.0.1:50002] [-c|--config-file aa.toml]
                  [-t|--initdata-toml FILE] [-i|--initdata-digest B64]
```

This module is the composition root: it reads the config file, the
environment and the init-data file, detects the attesters, builds the
token providers and serves until SIGTERM/SIGINT (exit 0). A bad flag,
config key or init-data file stops start-up with a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from guest.attestation_agent.agent import AttestationAgent, TokenProvider
from guest.attestation_agent.config import AaConfig, config_from_kbc_params, parse_config
from guest.attestation_agent.initdata import InitData, parse_init_data
from guest.attestation_agent.service import SERVICE_NAME, make_server
from guest.attestation_agent.serving import apply_log_level, read_kbc_params
from guest.attestation_agent.tokens import CocoAsTokenProvider, KbsTokenProvider
from guest.attesters import detect_attesters
from guest.kbs_protocol import AttesterEvidence
from trustee_common.addresses import parse_listen_address
from trustee_common.b64 import std_decode
from trustee_common.config import load_config_file
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.logsetup import setup_logging
from trustee_common.serving import serve_grpc

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "127.0.0.1:50002"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attestation-agent", description="Attestation Agent (gRPC)")
    parser.add_argument("-a", "--attestation_sock", default=DEFAULT_SOCKET, help="listen address host:port (default %(default)s)")
    parser.add_argument("-c", "--config-file", type=Path, help="AA config file (TOML, or JSON by extension)")
    parser.add_argument("-t", "--initdata-toml", type=Path, help="init-data TOML: bound at start-up and sent to the KBS")
    parser.add_argument("-i", "--initdata-digest", help="init-data digest (standard base64) to bind; --initdata-toml wins")
    return parser


def load_config(path: Path | None) -> AaConfig:
    if path is not None:
        return parse_config(load_config_file(path))
    return config_from_kbc_params(*read_kbc_params())


def load_init_data(path: Path) -> InitData:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--initdata-toml: cannot read {path}: {exc.strerror}") from exc
    return parse_init_data(raw, f"init-data {path}")


def build_agent(args: argparse.Namespace, config: AaConfig) -> AttestationAgent:
    primary, devices = detect_attesters()
    logger.info("attester in use: %s%s", primary.tee, "".join(f", additional: {d.tee}" for d in devices))
    init_data = load_init_data(args.initdata_toml) if args.initdata_toml is not None else None
    providers: dict[str, TokenProvider] = {}
    if config.kbs is not None:
        evidence = AttesterEvidence(primary, devices)
        providers["kbs"] = KbsTokenProvider(config.kbs, evidence, None if init_data is None else init_data.toml)
        logger.info("kbs token: KBS at %s, TEE key %s", config.kbs.url, config.kbs.tee_key_algorithm)
    if config.coco_as is not None:
        providers["coco_as"] = CocoAsTokenProvider(config.coco_as, primary)
        logger.info("coco_as token: attestation service at %s", config.coco_as.url)
    agent = AttestationAgent(
        primary, devices, providers, enable_eventlog=config.eventlog.enable_eventlog, init_pcr=config.eventlog.init_pcr
    )
    if init_data is not None:
        agent.bind_init_data(init_data.digest)
    elif args.initdata_digest is not None:
        try:
            agent.bind_init_data(std_decode(args.initdata_digest, "--initdata-digest"))
        except TrusteeError as exc:
            raise ConfigError(exc.detail) from exc
    return agent


async def serve(agent: AttestationAgent, address: str) -> None:
    """Build the gRPC server inside the running loop and serve until a stop signal."""
    await serve_grpc(make_server(agent), address, "attestation-agent", [SERVICE_NAME])


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        parse_listen_address(args.attestation_sock, "--attestation_sock")
        config = load_config(args.config_file)
        apply_log_level(config.log_level)
        agent = build_agent(args, config)
        asyncio.run(serve(agent, args.attestation_sock))
    except TrusteeError as exc:
        logger.error("%s", exc.detail)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
