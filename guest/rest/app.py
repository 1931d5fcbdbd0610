"""aiohttp adapter of the REST API server (upstream `api-server-rest`).

| route | feature | reply |
|---|---|---|
| `GET /info` | any | `{"version", "tee"?, "additional_tees"?, "feature"}` |
| `GET /aa/token?token_type=kbs` | attestation | AA GetToken bytes |
| `GET /aa/evidence?runtime_data=..[&encoding=base64]` | attestation | AA GetEvidence bytes |
| `GET /aa/additional-evidence?...` | attestation | AA GetAdditionalEvidence bytes |
| `POST /aa/aael` | attestation | `{"success": "true"}` or `{"success": "false", "message"}` |
| `GET /cdh/resource/<repo>/<type>/<tag>` | resource | CDH GetResource bytes |
| `POST /cdh/secret` (body: the `sealed.` string) | resource | CDH UnsealSecret plaintext |

Peers that are not loopback get 403 `Forbidden` before anything else;
unknown paths 404 `URL NOT FOUND`; a disabled feature 404 with upstream's
body. Failures map to statuses by `routes.status_for` with a short text
body; nothing else (no traceback) reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from guest.attestation_agent.agent import MeasurementResult
from guest.attestation_agent.client import AaClient
from guest.cdh.client import CdhClient
from guest.rest import routes
from trustee_common.bounded import loads_json
from trustee_common.errors import TrusteeError

logger = logging.getLogger(__name__)

OCTET = "application/octet-stream"
#: Request bodies: a sealed secret is at most `guest.cdh.sealed.MAX_SEALED_BYTES`, plus a trailing newline or two.
MAX_BODY_BYTES = 64 * 1024 + 16
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FEATURES = web.AppKey("features", routes.Features)
AA_ADDR = web.AppKey("aa_addr", str)
CDH_ADDR = web.AppKey("cdh_addr", str)
AA = web.AppKey("aa", AaClient)
CDH = web.AppKey("cdh", CdhClient)

_MEASUREMENT_MESSAGES = {
    MeasurementResult.NOT_SUPPORTED: "The platform does not support runtime measurement",
    MeasurementResult.NOT_ENABLED: "Attestation Agent does not enable eventlog recording",
}


def text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body)


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if not routes.is_loopback(host):
        logger.warning("refused a request from non-loopback peer %s", host)
        return text(403, routes.FORBIDDEN_BODY)
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TrusteeError as exc:
        status = routes.status_for(exc)
        logger.info("%s %s failed: %s: %s", request.method, request.path, exc.variant, exc.detail)
        return text(status, exc.detail if status != 500 else routes.INTERNAL_BODY)
    except web.HTTPNotFound:
        return text(404, routes.NOT_FOUND_BODY)
    except web.HTTPException as exc:
        return text(exc.status, exc.reason)
    except HttpProcessingError:  # a body that breaks HTTP framing
        return text(400, "request body is not valid HTTP framing")
    except ConnectionError:  # the client went away: nobody to answer, nothing to report
        logger.debug("%s %s: client connection lost", request.method, request.path)
        return text(400, "client connection lost")
    except Exception:
        logger.exception("%s %s failed with an unexpected error", request.method, request.path)
        return text(500, routes.INTERNAL_BODY)


def _version() -> str:
    try:
        return metadata.version("pytrustee")
    except metadata.PackageNotFoundError:
        return "unknown"


async def info(request: web.Request) -> web.Response:
    features = request.app[FEATURES]
    body: dict[str, object] = {"version": _version()}
    if features.attestation:
        aa = request.app[AA]
        body["tee"] = await aa.get_tee_type()
        additional = await aa.get_additional_tees()
        if additional:
            body["additional_tees"] = additional
    body["feature"] = features.name
    return web.json_response(body)


async def aa_token(request: web.Request) -> web.Response:
    token_type = routes.token_type(request.query.get("token_type"))
    return web.Response(body=await request.app[AA].get_token(token_type), content_type=OCTET)


async def aa_evidence(request: web.Request) -> web.Response:
    data = routes.runtime_data(request.query.get("runtime_data"), request.query.get("encoding"))
    return web.Response(body=await request.app[AA].get_evidence(data), content_type=OCTET)


async def aa_additional_evidence(request: web.Request) -> web.Response:
    data = routes.runtime_data(request.query.get("runtime_data"), request.query.get("encoding"))
    return web.Response(body=await request.app[AA].get_additional_evidence(data), content_type=OCTET)


async def aa_aael(request: web.Request) -> web.Response:
    body = loads_json(await request.read(), "body")
    result = await request.app[AA].extend_runtime_measurement(*routes.aael_event(body))
    if result is MeasurementResult.OK:
        return web.json_response({"success": "true"})
    return web.json_response({"success": "false", "message": _MEASUREMENT_MESSAGES[result]})


_AA_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "token"): aa_token,
    ("GET", "evidence"): aa_evidence,
    ("GET", "additional-evidence"): aa_additional_evidence,
    ("POST", "aael"): aa_aael,
}


async def aa_dispatch(request: web.Request) -> web.StreamResponse:
    if not request.app[FEATURES].attestation:
        return text(404, routes.ATTESTATION_DISABLED_BODY)
    handler = _AA_ROUTES.get((request.method, request.match_info["tail"]))
    if handler is None:
        return text(404, routes.NOT_FOUND_BODY)
    return await handler(request)


async def cdh_resource(request: web.Request) -> web.StreamResponse:
    if not request.app[FEATURES].resource:
        return text(404, routes.RESOURCE_DISABLED_BODY)
    if request.method != "GET":
        return text(405, "method not allowed")
    raw_tail = request.rel_url.raw_path.removeprefix("/cdh/resource/")
    resource = await request.app[CDH].get_resource(routes.resource_uri(raw_tail))
    return web.Response(body=resource, content_type=OCTET)


async def cdh_secret(request: web.Request) -> web.StreamResponse:
    """The plaintext of the sealed secret in the body (a route of this server, not upstream's)."""
    if not request.app[FEATURES].resource:
        return text(404, routes.RESOURCE_DISABLED_BODY)
    if request.method != "POST":
        return text(405, "method not allowed")
    plaintext = await request.app[CDH].unseal_secret(routes.sealed_secret(await request.read()))
    return web.Response(body=plaintext, content_type=OCTET)


async def clients(app: web.Application) -> AsyncIterator[None]:
    """gRPC channels to the AA and the CDH, opened in the loop and closed on shutdown."""
    features = app[FEATURES]
    if features.attestation:
        app[AA] = AaClient(app[AA_ADDR])
    if features.resource:
        app[CDH] = CdhClient(app[CDH_ADDR])
    yield
    if features.attestation:
        await app[AA].close()
    if features.resource:
        await app[CDH].close()


def make_app(features: routes.Features, aa_addr: str, cdh_addr: str) -> web.Application:
    app = web.Application(middlewares=[loopback_only, errors], client_max_size=MAX_BODY_BYTES)
    app[FEATURES] = features
    app[AA_ADDR] = aa_addr
    app[CDH_ADDR] = cdh_addr
    app.cleanup_ctx.append(clients)
    app.router.add_get("/info", info)
    app.router.add_route("*", "/aa/{tail:.*}", aa_dispatch)
    app.router.add_route("*", "/cdh/resource/{tail:.+}", cdh_resource)
    app.router.add_route("*", "/cdh/secret", cdh_secret)
    return app
