"""Admin handlers: resources, resource policy, attestation policy, reference values.

Every handler first authorizes the caller (`AdminAuthorizer`, with the
method and the decoded path without the query, built from the same
decoded segments the dispatcher handed the handler) and only then reads the body, so an unauthenticated
caller learns nothing about the request's validity. Bodies are checked
strictly before anything is forwarded or stored.
"""

from __future__ import annotations

import re

from aiohttp import web

from kbs.core.request_path import admin_target, decode_segments
from kbs.http.handlers import no_subpath, parse_json_body
from kbs.http.state import KbsState
from kbs.resources import ResourceService
from trustee_common.b64 import url_decode
from trustee_common.errors import MalformedRequestError, PluginNotFoundError, ReferenceValueNotFoundError, clip_repr
from trustee_common.storage.directory import parse_resource_path

_POLICY_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,127}$")
_ATTESTATION_POLICY_KEYS = {"policy_id", "policy", "type"}
POLICY_TYPES = ("rego",)


def _authorize(request: web.Request, state: KbsState) -> None:
    target = admin_target(decode_segments(request.rel_url.raw_path))
    state.admin.authorize(request.headers.get("Authorization"), request.method, target, state.clock())


def _resources(state: KbsState) -> ResourceService:
    if state.resources is None:
        raise PluginNotFoundError("Plugin resource not found")
    return state.resources


async def write_resource(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    _authorize(request, state)
    path = "/".join(rest)
    parse_resource_path(path)
    await _resources(state).write(path, await request.read())
    return web.Response()


async def delete_resource(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    _authorize(request, state)
    await _resources(state).delete("/".join(rest))
    return web.Response()


async def get_resource_policy(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    _authorize(request, state)
    return web.json_response(await state.policies.current_json())


async def set_resource_policy(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    _authorize(request, state)
    await state.policies.set_from_json(parse_json_body(await request.read()))
    return web.Response()


def _attestation_policy(body: object) -> tuple[str, str]:
    """`{"policy_id", "policy": base64url-no-pad, "type"?: "rego"}` → (id, policy)."""
    if not isinstance(body, dict) or not set(body) <= _ATTESTATION_POLICY_KEYS:
        raise MalformedRequestError('attestation policy body must be {"policy_id", "policy", "type"?}')
    policy_id, policy = body.get("policy_id"), body.get("policy")
    if not isinstance(policy_id, str) or not _POLICY_ID.fullmatch(policy_id):
        raise MalformedRequestError("policy_id: must be 1-128 characters of [A-Za-z0-9_-.], not starting with '.'")
    if not isinstance(policy, str):
        raise MalformedRequestError("policy: missing or not a string")
    url_decode(policy, "policy")
    if body.get("type", "rego") not in POLICY_TYPES:
        raise MalformedRequestError(f"type: unsupported policy type {clip_repr(body.get('type'))} (only rego)")
    return policy_id, policy


async def set_attestation_policy(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    _authorize(request, state)
    policy_id, policy = _attestation_policy(parse_json_body(await request.read()))
    await state.attestation.set_policy(policy_id, policy)
    return web.Response()


async def register_reference_value(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    _authorize(request, state)
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequestError("reference value message is not UTF-8 JSON") from None
    if not isinstance(parse_json_body(raw), dict):
        raise MalformedRequestError("reference value message must be a JSON object")
    await state.attestation.register_reference_value(text)
    return web.Response()


async def get_reference_value(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    _authorize(request, state)
    reference_value_id = "/".join(rest)
    if not reference_value_id:
        raise MalformedRequestError("reference value id is missing: GET /kbs/v0/reference-value/<id>")
    value = await state.attestation.query_reference_value(reference_value_id)
    if value is None:
        raise ReferenceValueNotFoundError(f"No reference value found for the given id: {reference_value_id}")
    return web.Response(text=value, content_type="application/json")
