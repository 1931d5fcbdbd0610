"""The aiohttp application: routes, the `/kbs/v0/<plugin>/...` dispatcher, health and metrics.

As upstream, everything under `/kbs/v0/` goes to one dispatcher that picks
the endpoint by the first path segment and the method: an unknown first
segment (including the empty one) is 404 `PluginNotFound`. What a known
one serves depends on the rest of the path too: most endpoints take no
further segments (`/kbs/v0/auth/x` is 404 `InvalidRequestPath`), those in
`SUBPATH_METHODS` take any (their handlers check them). A method the exact
path does not serve is 405 `MethodNotAllowed`, whose `Allow` header lists
the methods it does serve. The resource endpoints exist only when the
resource plugin is configured, `/kbs/v0/sample/...` only when the sample
plugin is. The other configured plugins (`kbs.plugins`) take every routed
method and any sub-path; the gateway (`kbs.http.plugin_handlers`) asks
them what each request needs.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from kbs.core.request_path import decode_segments
from kbs.errors import InvalidRequestPathError, MethodNotAllowedError
from kbs.http import admin_handlers as admin
from kbs.http import handlers
from kbs.http.errors import Handler, error_middleware
from kbs.http.plugin_handlers import plugin_endpoints
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

#: Upstream routes GET, POST, PUT and DELETE to a plugin.
SAMPLE_ENDPOINTS: dict[str, Endpoint] = {method: admin.sample_plugin for method in ("DELETE", "GET", "POST", "PUT")}


#: (endpoint, method) pairs that take segments after the endpoint name; every other one takes none.
SUBPATH_METHODS = frozenset({("reference-value", "GET"), ("resource", "GET"), ("resource", "POST"), ("resource", "DELETE")}
                            | {("sample", method) for method in SAMPLE_ENDPOINTS})
#: What `/healthz` and `/metrics` serve (aiohttp answers HEAD like GET).
READ_METHODS = ("GET", "HEAD")


def endpoint_table(state: KbsState) -> dict[str, dict[str, Endpoint]]:
    table = dict(BUILTIN_ENDPOINTS)
    if state.resources is not None:
        table["resource"] = RESOURCE_ENDPOINTS
    if state.sample_plugin:
        table["sample"] = SAMPLE_ENDPOINTS
    if state.report_store is not None:
        table["attestation-reports"] = {"GET": admin.get_attestation_reports}
    for name, plugin in state.plugins.items():
        table[name] = plugin_endpoints(plugin)
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
    served = served_methods(plugin, methods, rest, subpaths=plugin in state.plugins)
    if request.method in served:
        return await methods[request.method](request, state, rest)
    if not served:
        raise InvalidRequestPathError(f"Request path {clip(request.path)} is invalid")
    where = f"/kbs/v0/{plugin}" + ("/..." if rest else "")
    raise MethodNotAllowedError(f"method {clip(request.method)} is not allowed on {where} (allowed: {', '.join(served)})", served)


def served_methods(plugin: str, methods: dict[str, Endpoint], rest: list[str], *, subpaths: bool = False) -> tuple[str, ...]:
    """The methods that serve `/kbs/v0/<plugin>/<rest...>`, sorted; `subpaths`: every method takes sub-paths."""
    return _served(plugin, tuple(methods), bool(rest), subpaths)


@functools.lru_cache(maxsize=256)  # keyed by endpoint names and method names: a few dozen entries
def _served(plugin: str, methods: tuple[str, ...], rest: bool, subpaths: bool) -> tuple[str, ...]:
    return tuple(sorted(m for m in methods if not rest or subpaths or (plugin, m) in SUBPATH_METHODS))


async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.Response()


async def metrics(request: web.Request) -> web.StreamResponse:
    if request.method not in READ_METHODS:
        raise MethodNotAllowedError(f"method {clip(request.method)} is not allowed on /metrics (allowed: GET, HEAD)", READ_METHODS)
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
    shedder = LoadShedder(state.max_in_flight_requests, state.retry_after_seconds, state.metrics, state.target_latency_seconds)
    middlewares = [request_id, count_requests, shedder.middleware, error_middleware]
    app = web.Application(client_max_size=state.payload_limit_mib * MIB, middlewares=middlewares)
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    if state.metrics_on_main:
        app.router.add_route("*", "/metrics", metrics)
    app.router.add_route("*", "/kbs/v0/{tail:.*}", dispatch)
    return app
