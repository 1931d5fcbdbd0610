"""Admin handlers: resources, resource policy, attestation policy, reference values, attestation reports.

Every handler first authorizes the caller (`AdminAuthorizer`, with the
method and the decoded path without the query, built from the same
decoded segments the dispatcher handed the handler) and only then reads the body, so an unauthenticated
caller learns nothing about the request's validity. Bodies are checked
strictly before anything is forwarded or stored.

Every admin request is audited (`@audited`): who (the token's `sub`, `iss`
and `role`, or the mode), what (action, method, endpoint, target, a digest
of the new content) and the outcome. A change that was made but could not
be audited is answered with `StorageError` (500, "the audit log cannot be
written") so the admin learns of it; the event is in the service log
(docs/audit.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kbs.core.admin import AdminMode, bearer_token
from kbs.core.audit_events import admin_event, admin_identity, digest
from kbs.core.jws import parse_compact
from kbs.core.reports import ReportQuery
from kbs.core.request_path import admin_target, decode_segments
from kbs.http.handlers import audit_origin, no_subpath, parse_json_body
from kbs.http.state import KbsState
from kbs.reports import list_reports
from kbs.resources import ResourceService
from trustee_common.b64 import url_decode
from trustee_common.errors import (
    AdminAuthError,
    AdminForbiddenError,
    MalformedRequestError,
    PluginNotFoundError,
    ReferenceValueNotFoundError,
    TrusteeError,
    clip_repr,
)
from trustee_common.storage.directory import parse_resource_path

#: What upstream's `sample` plugin answers, whatever the request.
SAMPLE_PLUGIN_RESPONSE = b"sample plugin response"
_POLICY_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,127}$")
_ATTESTATION_POLICY_KEYS = {"policy_id", "policy", "type"}
POLICY_TYPES = ("rego",)


@dataclass
class AdminCall:
    """What an admin handler tells the audit log: who called, on what, with which content."""

    request: web.Request
    state: KbsState
    who: dict[str, Any] | None = None
    target: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] | None = None

    def authorize(self) -> None:
        header = self.request.headers.get("Authorization")
        target = admin_target(decode_segments(self.request.rel_url.raw_path))
        role = self.state.admin.authorize(header, self.request.method, target, self.state.clock())
        claims = None
        token = bearer_token(header)
        if self.state.admin.mode is AdminMode.AUTHENTICATED and token is not None:
            claims = parse_compact(token, AdminAuthError).claims  # verified by `authorize` just now
        self.who = admin_identity(self.state.admin.mode.value, role, claims)


AdminHandler = Callable[[AdminCall, list[str]], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, KbsState, list[str]], Awaitable[web.StreamResponse]]


def audited(action: str, *, change: bool = True) -> Callable[[AdminHandler], Endpoint]:
    """Audit every call; a successful change that cannot be audited answers 500 (reads only log the failure)."""

    def wrap(handler: AdminHandler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
            call = AdminCall(request, state)
            try:
                response = await handler(call, rest)
            except TrusteeError as exc:
                outcome = "denied" if isinstance(exc, AdminAuthError | AdminForbiddenError) else "failed"
                state.audit.best_effort(_event(call, action, outcome, exc))
                raise
            (state.audit.must if change else state.audit.best_effort)(_event(call, action, "ok"))
            return response

        return endpoint

    return wrap


def _event(call: AdminCall, action: str, outcome: str, error: TrusteeError | None = None) -> dict[str, Any]:
    request = call.request
    return admin_event(action=action, method=request.method, endpoint=request.rel_url.raw_path, outcome=outcome,
                       origin=audit_origin(request), who=call.who, target=call.target, content=call.content, error=error)


def _resources(state: KbsState) -> ResourceService:
    if state.resources is None:
        raise PluginNotFoundError("Plugin resource not found")
    return state.resources


@audited("sample", change=False)
async def sample_plugin(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    """Upstream's `sample` plugin (`[[plugins]] name = "sample"`): admin-authorized, a fixed plain text, not encrypted."""
    call.authorize()
    return web.Response(body=SAMPLE_PLUGIN_RESPONSE, content_type="application/octet-stream")


@audited("resource.write")
async def write_resource(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    call.authorize()
    path = "/".join(rest)
    call.target["resource"] = path
    parse_resource_path(path)
    data = await call.request.read()
    call.content = digest(data)
    await _resources(call.state).write(path, data)
    return web.Response()


@audited("resource.delete")
async def delete_resource(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    call.authorize()
    call.target["resource"] = "/".join(rest)
    await _resources(call.state).delete("/".join(rest))
    return web.Response()


@audited("resource_policy.read", change=False)
async def get_resource_policy(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    no_subpath(call.request, rest)
    call.authorize()
    return web.json_response(await call.state.policies.current_json())


@audited("resource_policy.set")
async def set_resource_policy(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    no_subpath(call.request, rest)
    call.authorize()
    body = parse_json_body(await call.request.read())
    call.content = _policy_digest(body, "policy")
    await call.state.policies.set_from_json(body)
    return web.Response()


def _policy_digest(body: object, key: str) -> dict[str, Any] | None:
    """Digest of the decoded policy text in `body[key]`, when it decodes."""
    if isinstance(body, dict) and isinstance(body.get(key), str):
        try:
            return digest(url_decode(body[key], key))
        except MalformedRequestError:
            return None
    return None


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


@audited("attestation_policy.set")
async def set_attestation_policy(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    no_subpath(call.request, rest)
    call.authorize()
    body = parse_json_body(await call.request.read())
    if isinstance(body, dict) and isinstance(body.get("policy_id"), str):
        call.target["policy_id"] = body["policy_id"][:128]
    call.content = _policy_digest(body, "policy")
    policy_id, policy = _attestation_policy(body)
    await call.state.attestation.set_policy(policy_id, policy)
    return web.Response()


@audited("reference_value.register")
async def register_reference_value(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    no_subpath(call.request, rest)
    call.authorize()
    raw = await call.request.read()
    call.content = digest(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequestError("reference value message is not UTF-8 JSON") from None
    if not isinstance(parse_json_body(raw), dict):
        raise MalformedRequestError("reference value message must be a JSON object")
    await call.state.attestation.register_reference_value(text)
    return web.Response()


@audited("reference_value.read", change=False)
async def get_reference_value(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    call.authorize()
    reference_value_id = "/".join(rest)
    call.target["reference_value_id"] = reference_value_id
    if not reference_value_id:
        raise MalformedRequestError("reference value id is missing: GET /kbs/v0/reference-value/<id>")
    value = await call.state.attestation.query_reference_value(reference_value_id)
    if value is None:
        raise ReferenceValueNotFoundError(f"No reference value found for the given id: {reference_value_id}")
    return web.Response(text=value, content_type="application/json")


@audited("attestation_reports.read", change=False)
async def get_attestation_reports(call: AdminCall, rest: list[str]) -> web.StreamResponse:
    """`?instance_id=&since=&limit=&cursor=`: signed reports, newest first (docs/attestation-reports.md)."""
    no_subpath(call.request, rest)
    call.authorize()
    query = ReportQuery.parse(dict(call.request.query))
    if query.instance_id is not None:
        call.target["instance_id"] = query.instance_id[:128]
    assert call.state.report_store is not None  # routed only when reports are enabled
    return web.json_response(await list_reports(call.state.report_store, query))
