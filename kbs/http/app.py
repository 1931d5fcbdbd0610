"""The aiohttp application: routes, the `/kbs/v0/<plugin>/...` dispatcher, health and metrics.

As upstream, everything under `/kbs/v0/` goes to one dispatcher that picks
the endpoint by the first path segment and the method: an unknown first
segment (including the empty one) is 404 `PluginNotFound`, a known one
with a method it does not serve is 405 `MethodNotAllowed`. The resource
endpoints exist only when the resource plugin is configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from kbs.core.request_path import decode_segments
from kbs.errors import MethodNotAllowedError
from kbs.http import admin_handlers as admin
from kbs.http import handlers
from kbs.http.errors import Handler, error_middleware
from kbs.http.shed import LoadShedder
from kbs.http.state import STATE, KbsState
from kbs.metrics import CONTENT_TYPE
from trustee_common.errors import PluginNotFoundError, clip
from trustee_common.requestid import HEADER, REQUEST_ID, accept_request_id

Endpoint = Callable[[web.Request, KbsState, list[str]], Awaitable[web.StreamResponse]]

MIB = 1024 * 1024

BUILTIN_ENDPOINTS: dict[str, dict[str, Endpoint]] = {
    "auth": {"POST": handlers.auth},
    "attest": {"POST": handlers.attest},
    "resource-policy": {"GET": admin.get_resource_policy, "POST": admin.set_resource_policy},
    "attestation-policy": {"POST": admin.set_attestation_policy},
    "reference-value": {"GET": admin.get_reference_value, "POST": admin.register_reference_value},
}
RESOURCE_ENDPOINTS: dict[str, Endpoint] = {
    "GET": handlers.get_resource,
    "POST": admin.write_resource,
    "DELETE": admin.delete_resource,
}


def endpoint_table(state: KbsState) -> dict[str, dict[str, Endpoint]]:
    table = dict(BUILTIN_ENDPOINTS)
    if state.resources is not None:
        table["resource"] = RESOURCE_ENDPOINTS
    return table


def path_segments(request: web.Request) -> list[str]:
    """The decoded segments after `/kbs/v0/` (`kbs.core.request_path`: the same ones admin ACLs see)."""
    return decode_segments(request.rel_url.raw_path)


async def dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    plugin, *rest = path_segments(request)
    methods = endpoint_table(state).get(plugin)
    if methods is None:
        raise PluginNotFoundError(f"Plugin {clip(plugin)} not found")
    endpoint = methods.get(request.method)
    if endpoint is None:
        allowed = tuple(sorted(methods))
        raise MethodNotAllowedError(f"method {request.method} is not allowed on /kbs/v0/{plugin} (allowed: {', '.join(allowed)})", allowed)
    return await endpoint(request, state, rest)


async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.Response()


async def metrics(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowedError("method not allowed on /metrics (allowed: GET)", ("GET",))
    response = web.Response(body=request.app[STATE].metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith("/kbs"):
        request.app[STATE].metrics.http_requests.labels(request.method, str(response.status)).inc()
    return response


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep a well-formed `X-Request-Id` or assign one; every log line and audit event of the request carries it."""
    rid = accept_request_id(request.headers.get(HEADER))
    token = REQUEST_ID.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[HEADER] = rid
        raise
    finally:
        REQUEST_ID.reset(token)
    response.headers[HEADER] = rid
    return response


def make_app(state: KbsState) -> web.Application:
    shedder = LoadShedder(state.max_in_flight_requests, state.retry_after_seconds, state.metrics)
    middlewares = [request_id, count_requests, shedder.middleware, error_middleware]
    app = web.Application(client_max_size=state.payload_limit_mib * MIB, middlewares=middlewares)
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    if state.metrics_on_main:
        app.router.add_route("*", "/metrics", metrics)
    app.router.add_route("*", "/kbs/v0/{tail:.*}", dispatch)
    return app
