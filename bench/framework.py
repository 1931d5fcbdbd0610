"""The framework floor: what aiohttp and grpc.aio cost for one flow with nothing behind them.

A flow reaches the servers as three HTTP requests on one new connection (the
guest's `/auth`, `/attest` and resource request) and, in the default
topology, one unary gRPC call from the KBS to the AS. Here a bare aiohttp
server (handlers that read the body and answer a fixed one of a flow's
sizes; no middleware, no access log) and a bare grpc.aio server (one unary
method answering a token-sized message) each run in a child process of their
own, driven from this process with the same client libraries the guest and
the KBS use, by `CONCURRENCY` clients back to back as in `bench.load`'s closed
loop. The children's CPU per flow is
measured as the servers' is (`bench.procstat`), and so is this process's CPU
per gRPC call: what the KBS, as the AS's client, pays for the hop.

floor / (floor + framework floor) is then the best efficiency any server
built on these two frameworks could reach on this machine, even if its own
code did nothing but the floor's work.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from bench.procstat import own_cpu_seconds, tree_cpu_seconds

CONCURRENCY = 64
#: Bodies of a sample-TEE flow's size: /auth request and challenge, /attest request and answer, the resource JWE.
AUTH_BODY = b"{" + b"a" * 120 + b"}"
CHALLENGE = b"{" + b"c" * 200 + b"}"
ATTEST_BODY = b"{" + b"e" * 1400 + b"}"
ATTEST_ANSWER = b"{" + b"t" * 1200 + b"}"
RESOURCE_JWE = b"{" + b"j" * 500 + b"}"
#: The AttestationEvaluate request (evidence and runtime data) and answer (the EAR token).
GRPC_REQUEST = b"r" * 1500
GRPC_ANSWER = b"t" * 1300
GRPC_METHOD = "/bench.Bare/Call"
#: How long a bare server may take to listen.
START_SECONDS = 60


def _http_app() -> web.Application:
    def answer(body: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, content_type="application/json")

        return handler

    app = web.Application()
    app.router.add_post("/kbs/v0/auth", answer(CHALLENGE))
    app.router.add_post("/kbs/v0/attest", answer(ATTEST_ANSWER))
    app.router.add_get("/kbs/v0/resource/{repository}/{type}/{tag}", answer(RESOURCE_JWE))
    return app


async def _serve_http(ready: Connection) -> None:
    runner = web.AppRunner(_http_app(), access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    ready.send(sock.getsockname()[1])
    await asyncio.Event().wait()


async def _serve_grpc(ready: Connection) -> None:
    async def call(_request: bytes, _context: Any) -> bytes:
        return GRPC_ANSWER

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("bench.Bare", {"Call": grpc.unary_unary_rpc_method_handler(call)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ready.send(port)
    await server.wait_for_termination()


def _child(kind: str, ready: Connection) -> None:
    asyncio.run(_serve_http(ready) if kind == "http" else _serve_grpc(ready))


async def _http_flow(url: str, pool: aiohttp.BaseConnector) -> None:
    async with aiohttp.ClientSession(connector=pool, connector_owner=False) as session:
        for method, path, body in (("POST", "auth", AUTH_BODY), ("POST", "attest", ATTEST_BODY), ("GET", "resource/a/b/c", None)):
            async with session.request(method, f"{url}/kbs/v0/{path}", data=body) as response:
                response.raise_for_status()
                await response.read()


Flow = Callable[[aiohttp.BaseConnector], Awaitable[object]]


async def _driven(count: int, one: Flow) -> None:
    """`count` flows by `CONCURRENCY` clients back to back, each with a connection pool of its own (as `bench.load`'s
    closed loop: a client's flows share its keep-alive connection)."""
    left = iter(range(count))

    async def client() -> None:
        async with aiohttp.TCPConnector(limit=0) as pool:
            while next(left, None) is not None:
                await one(pool)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def _per_flow(pid: int, count: int, one: Flow) -> tuple[float, float]:
    """(child CPU us, this process's CPU us) per flow over `count` flows, after a warm-up."""
    await _driven(min(count, 100), one)
    child, own = tree_cpu_seconds(pid), own_cpu_seconds()
    await _driven(count, one)
    return (tree_cpu_seconds(pid) - child) / count * 1e6, (own_cpu_seconds() - own) / count * 1e6


async def _with_child(kind: str, use: Callable[[int, int], Awaitable[tuple[float, float]]]) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(kind, sender), daemon=True)
    process.start()
    try:
        for _ in range(START_SECONDS * 10):
            if await asyncio.to_thread(receiver.poll, 0.1) or process.exitcode is not None:
                break
        if not receiver.poll():
            raise RuntimeError(f"the bare {kind} server did not start (exit status {process.exitcode})")
        port = int(receiver.recv())
        assert process.pid is not None
        return await use(process.pid, port)
    finally:
        process.kill()
        process.join()


async def measure(flows: int, *, grpc_hop: bool = True) -> dict[str, float]:
    """CPU microseconds per flow: `http_server`, and with `grpc_hop` `grpc_client` and `grpc_server`; and `total`."""

    async def http(pid: int, port: int) -> tuple[float, float]:
        return await _per_flow(pid, flows, lambda pool: _http_flow(f"http://127.0.0.1:{port}", pool))

    async def rpc(pid: int, port: int) -> tuple[float, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_METHOD)

            async def one(_pool: aiohttp.BaseConnector) -> None:
                if await call(GRPC_REQUEST) != GRPC_ANSWER:
                    raise RuntimeError("the bare gRPC server answered something else")

            return await _per_flow(pid, flows, one)

    timings = {"http_server": round((await _with_child("http", http))[0], 1)}
    if grpc_hop:
        server, client = await _with_child("grpc", rpc)
        timings |= {"grpc_client": round(client, 1), "grpc_server": round(server, 1)}
    timings["total"] = round(sum(timings.values()), 1)
    return timings


def ceiling(floor_us: float, framework_us: float) -> float:
    """The best efficiency with these frameworks: every flow costs at least the floor plus the framework floor."""
    return round(floor_us / (floor_us + framework_us), 3) if floor_us + framework_us > 0 else 0.0
