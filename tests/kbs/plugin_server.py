"""A small external KBS plugin (`kbs.plugin.v1.KbsPlugin` over grpc.aio) for the external-plugin tests.

Run as `python -m tests.kbs.plugin_server --port N [--tls CERT KEY]`. Paths
(after the backend name):

* `secret` (GET): token-gated, encrypted; answers `secret for <name query>`.
* `plain` (GET): token-gated, not encrypted; answers `plain answer`.
* `store` (POST): admin; answers `stored <n> bytes`.
* `echo/...` (any): admin; answers the request as JSON (method, path, query, body).
* `missing` (any): admin; answers `status_code` 404 with a body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import grpc

from trustee_pb import plugin_pb2 as pb
from trustee_pb import plugin_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
TOKEN_GATED = {"secret", "plain"}


def _first(path: Any) -> str:
    return str(path[0]) if len(path) else ""


class DemoPlugin(pb_grpc.KbsPluginServicer):
    async def ValidateAuth(self, request: pb.ValidateAuthRequest, context: Context) -> pb.ValidateAuthResponse:  # noqa: N802
        return pb.ValidateAuthResponse(requires_admin_auth=_first(request.path) not in TOKEN_GATED)

    async def NeedsEncryption(self, request: pb.NeedsEncryptionRequest, context: Context) -> pb.NeedsEncryptionResponse:  # noqa: N802
        return pb.NeedsEncryptionResponse(requires_payload_encryption=_first(request.path) == "secret")

    async def Handle(self, request: pb.PluginRequest, context: Context) -> pb.PluginResponse:  # noqa: N802
        first = _first(request.path)
        if first == "secret":
            return pb.PluginResponse(body=f"secret for {request.query.get('name', '?')}".encode(), status_code=200)
        if first == "plain":
            return pb.PluginResponse(body=b"plain answer")
        if first == "store":
            return pb.PluginResponse(body=f"stored {len(request.body)} bytes".encode(), status_code=201)
        if first == "echo":
            echo = {"method": request.method, "path": list(request.path), "query": dict(request.query), "body": request.body.decode()}
            return pb.PluginResponse(body=json.dumps(echo).encode(), status_code=200, content_type="application/json")
        return pb.PluginResponse(body=b"no such thing", status_code=404)


async def serve(port: int, tls: tuple[Path, Path] | None) -> None:
    server = grpc.aio.server()
    pb_grpc.add_KbsPluginServicer_to_server(DemoPlugin(), server)
    address = f"127.0.0.1:{port}"
    if tls is None:
        server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(tls[1].read_bytes(), tls[0].read_bytes())])
        server.add_secure_port(address, credentials)
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", nargs=2, type=Path, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    asyncio.run(serve(args.port, None if args.tls is None else (args.tls[0], args.tls[1])))


if __name__ == "__main__":
    main()
