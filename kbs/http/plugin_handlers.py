"""The generic plugin gateway: `/kbs/v0/<plugin>/<path...>` for the plugins of `kbs.plugins` (trustee-server.md 2.1).

For each request the plugin first says whether it needs the admin
credential (`validate_auth`, given the whole request, body included, as
upstream). Admin requests are authorized by the admin authorizer and
audited like every admin request (action `plugin`, the body as a digest);
the answer is the plugin's body, unencrypted. Every other request needs an
attestation token (live session cookie, else `Authorization: Bearer`),
verified, not stale, and allowed by the resource policy with `data.plugin`
= the plugin name and `data["resource-path"]` = the rest of the path (in
the form the policy uses, as for the resource plugin); only then is the
plugin called, with the token's init-data claims. If the plugin asks for
it (`encrypted`), the answer is a JWE to the token's TEE key
(`application/json`). Token-gated requests are audited as
`resource.release` events with the plugin named.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kbs.core.audit_events import digest, release_event
from kbs.http.admin_handlers import AdminCall, Endpoint, audited
from kbs.http.handlers import request_token
from kbs.http.state import KbsState
from kbs.plugins.base import ClientPlugin, PluginRequest
from trustee_common.errors import InternalError, TrusteeError

#: What upstream routes to a plugin.
METHODS = ("DELETE", "GET", "POST", "PUT")
#: Read-only admin calls are audited best-effort; the others must be on record.
READ_ONLY = ("GET", "HEAD")
INIT_DATA_POINTER = ("submods", "cpu0", "ear.veraison.annotated-evidence", "init_data_claims")


def plugin_endpoints(plugin: ClientPlugin) -> dict[str, Endpoint]:
    """The dispatcher's entry for one plugin: every routed method goes to the gateway."""

    async def endpoint(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
        return await call_plugin(plugin, request, state, rest)

    return dict.fromkeys(METHODS, endpoint)


async def call_plugin(plugin: ClientPlugin, request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    body = await request.read()
    call = PluginRequest(request.method, tuple(rest), dict(request.query.items()), body)
    if await plugin.validate_auth(call):
        return await _admin_endpoint(plugin, call)(request, state, rest)
    return await _token_gated(plugin, call, request, state)


def _admin_endpoint(plugin: ClientPlugin, call: PluginRequest) -> Endpoint:
    async def handler(admin: AdminCall, rest: list[str]) -> web.StreamResponse:
        admin.authorize()
        admin.target.update({"plugin": plugin.name, "path": "/".join(rest)})
        if call.body:
            admin.content = digest(call.body)
        answer = await plugin.handle(call)
        return web.Response(body=answer, content_type="application/octet-stream")

    return audited("plugin", change=call.method not in READ_ONLY)(handler)


def init_data_claims(claims: dict[str, Any]) -> Any:
    """`claims["/submods/cpu0/ear.veraison.annotated-evidence/init_data_claims"]`, None when absent."""
    node: Any = claims
    for key in INIT_DATA_POINTER:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


async def _token_gated(plugin: ClientPlugin, call: PluginRequest, request: web.Request, state: KbsState) -> web.StreamResponse:
    gate = state.plugin_gate
    if gate is None:
        raise InternalError(f"plugin {plugin.name} is routed without an access gate")
    token, verified, origin = await request_token(request, state)
    path = "/".join(call.path)
    facts: dict[str, Any] = {"plugin": plugin.name, "resource": path}
    try:
        claims, _ = await gate.admit(token, verified, plugin.name, path, call.query, facts)
        answer = await plugin.handle(call, init_data_claims(claims))
        if await plugin.encrypted(call):
            envelope = gate.verifier.tee_pubkey(claims).encrypt(answer)
            response = web.Response(text=json.dumps(envelope), content_type="application/json")
        else:
            response = web.Response(body=answer, content_type="application/octet-stream")
    except TrusteeError as exc:
        state.audit.best_effort(release_event("denied", origin, facts, exc))
        raise
    state.audit.must(release_event("released", origin, facts))
    return response
