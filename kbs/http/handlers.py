"""Guest-facing handlers: `/auth`, `/attest` and `GET /resource/<repo>/<type>/<tag>`.

Each handler decodes the request, calls the service and encodes the reply.
The session cookie is `kbs-session-id=<id>; Expires=<date>` as upstream
sets it (no Path, so it is scoped to `/kbs/v0`).
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from aiohttp import web

from kbs.core.admin import bearer_token
from kbs.core.audit_events import reference
from kbs.core.session import COOKIE_NAME
from kbs.errors import InvalidRequestPathError
from kbs.http.state import KbsState
from trustee_common.bounded import loads_json
from trustee_common.errors import PayloadTooLargeError, PluginNotFoundError, clip
from trustee_common.storage.directory import parse_resource_path

#: `/auth` is unauthenticated and its body is a few short fields: anything larger is refused.
AUTH_BODY_LIMIT = 16 * 1024
_CHUNK = 64 * 1024


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refused with `PayloadTooLargeError` as soon as it exceeds `limit` bytes."""
    too_large = PayloadTooLargeError(f"request body is larger than {limit} bytes allowed on {clip(request.path)}")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(min(_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large
    return b"".join(chunks)


def parse_json_body(body: bytes) -> object:
    """A request body as JSON; `MalformedRequestError` otherwise."""
    return loads_json(body, "request body")


def audit_origin(request: web.Request, session_id: str | None = None) -> dict[str, Any]:
    """Where a request came from, for the audit log: the peer address and a reference to the session."""
    origin: dict[str, Any] = {"peer": request.remote}
    if session_id:
        origin["session_ref"] = reference(session_id)
    return origin


def no_subpath(request: web.Request, rest: list[str]) -> None:
    if rest:
        raise InvalidRequestPathError(f"Request path {clip(request.path)} is invalid")


def _with_cookie(response: web.Response, session_id: str, expires_at: float) -> web.Response:
    response.headers["Set-Cookie"] = f"{COOKIE_NAME}={session_id}; Expires={formatdate(expires_at, usegmt=True)}"
    return response


async def auth(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    session = await state.rcar.auth(parse_json_body(await read_limited(request, AUTH_BODY_LIMIT)))
    return _with_cookie(web.json_response(session.challenge.to_json()), session.id, session.expires_at)


async def attest(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    no_subpath(request, rest)
    body = parse_json_body(await request.read())
    session_id = request.cookies.get(COOKIE_NAME)
    session = await state.rcar.attest(session_id, body, audit_origin(request, session_id))
    return _with_cookie(web.json_response({"token": session.token}), session.id, session.expires_at)


async def request_token(request: web.Request, state: KbsState) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """The attestation token of a request: a live attested session's (with the claims the KBS verified), else the
    `Authorization: Bearer` one; with the audit origin."""
    session_id = request.cookies.get(COOKIE_NAME)
    session = await state.rcar.attested_session(session_id)
    origin = audit_origin(request, session_id if session is not None else None)
    if session is None:
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None:
            origin["token_ref"] = reference(token)
        return token, None, origin
    return session.token, session.claims, origin


async def get_resource(request: web.Request, state: KbsState, rest: list[str]) -> web.StreamResponse:
    if state.resources is None:
        raise PluginNotFoundError("Plugin resource not found")
    path = "/".join(rest)
    parse_resource_path(path)
    token, verified, origin = await request_token(request, state)
    query = {key: value for key, value in request.query.items()}
    return web.json_response(await state.resources.release(token, path, query, origin, verified=verified))
