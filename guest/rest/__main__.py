"""`api-server-rest`: the guest's HTTP API over the AA and the CDH.

```
api-server-rest [-b|--bind 127.0.0.1:8006] [-f|--features resource|attestation|all]
                [-a|--aa_addr 127.0.0.1:50002] [-c|--cdh_addr 127.0.0.1:50000]
```

Composition root: validates the flags, builds the app and serves it until
SIGTERM/SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from aiohttp import web

from guest.rest.app import make_app
from guest.rest.routes import FEATURES, Features
from trustee_common.addresses import grpc_target, parse_listen_address
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.http_serving import ConnectionLimits, runner_options, serve_bounded
from trustee_common.logsetup import setup_logging
from trustee_common.serving import stop_on_signal, wait_for_stop_signal

logger = logging.getLogger(__name__)

#: The guest API serves one pod's processes: few connections, short timeouts.
GUEST_LIMITS = ConnectionLimits(header_read_timeout=10.0, keep_alive_timeout=15.0, max_connections=256)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="api-server-rest", description="REST API server for the AA and the CDH")
    parser.add_argument("-b", "--bind", default="127.0.0.1:8006", help="listen address host:port (default %(default)s)")
    parser.add_argument("-f", "--features", default="resource", choices=FEATURES, help="enabled API groups (default %(default)s)")
    parser.add_argument("-a", "--aa_addr", default="127.0.0.1:50002", help="attestation agent gRPC address (default %(default)s)")
    parser.add_argument("-c", "--cdh_addr", default="127.0.0.1:50000", help="confidential data hub gRPC address (default %(default)s)")
    return parser


async def serve(app: web.Application, host: str, port: int, limits: ConnectionLimits = GUEST_LIMITS) -> None:
    stop = stop_on_signal()  # before the port opens: a SIGTERM right after start-up stops cleanly too
    runner = web.AppRunner(app, access_log=None, **runner_options(limits))
    await runner.setup()
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(serve_bounded(runner, [(host, port)], limits))
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
            logger.info("api-server-rest listening on http://%s:%d", host, port)
            await wait_for_stop_signal(stop)
    finally:
        await runner.cleanup()
        logger.info("api-server-rest stopped")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        host, port = parse_listen_address(args.bind, "--bind")
        grpc_target(args.aa_addr, "--aa_addr")
        grpc_target(args.cdh_addr, "--cdh_addr")
        features = Features.parse(args.features)
        logger.info("features: %s; attestation agent %s, confidential data hub %s", features.name, args.aa_addr, args.cdh_addr)
        asyncio.run(serve(make_app(features, args.aa_addr, args.cdh_addr), host, port))
    except TrusteeError as exc:
        logger.error("%s", exc.detail)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
