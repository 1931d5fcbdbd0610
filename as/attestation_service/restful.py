"""HTTP adapter: upstream's RESTful Attestation Service API (`restful-as`) over `AttestationService`.

Routes (trustee-server.md 6.2):

* `POST /attestation` `{"verification_requests": [{"tee", "evidence",
  "runtime_data": {"raw": b64url} | {"structured": {...}},
  "init_data": {"init_data_digest": b64url} | {"init_data_toml": "..."},
  "runtime_data_hash_algorithm"}], "policy_ids": [...]}` -> 200, the bare
  token (`text/plain`); `policy_ids` is required, `[]` means `default`.
  The guest AA's `coco_as` token type posts here.
* `POST /policy` `{"policy_id", "policy": b64url}` (a `type` key is
  ignored, as upstream) -> 200, empty; a write (see below).
* `GET /policy` -> `[{"policy-id": "..."}, ...]`.
* `POST /challenge` `{"tee": "...", "tee_params": "..."}` -> the challenge.
* `GET /.well-known/jwks.json` -> the token key set; `GET /healthz` -> 200.

Errors are our JSON `{"type", "detail"}` with a status from `STATUS_BY_ERROR`
(upstream answers 500 with a text body to every error). `POST /policy` is
refused (403) unless the service listens on loopback, requires client
certificates (`[tls] client_ca`), or was started with
`--insecure-allow-writes`: upstream's RESTful AS lets anyone replace a
policy. CORS: with `allowed_origins`, a request whose `Origin` is listed
gets `Access-Control-Allow-Origin` (POST, GET, OPTIONS), as upstream's `-r`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from attestation_service.core.request import VerificationRequest
from attestation_service.service import AttestationService
from trustee_common import errors as e
from trustee_common.audit import AuditSink
from trustee_common.audit_events import digest
from trustee_common.b64 import url_decode_text
from trustee_common.bounded import loads_json
from trustee_common.grpc_audit import audited
from trustee_common.grpc_tls import WriteAccess, write_refusal

logger = logging.getLogger(__name__)

#: Request bodies: evidence is at most a few hundred KiB (`core.request.MAX_EVIDENCE_BYTES` per item).
MAX_BODY_BYTES = 8 << 20
STATUS_BY_ERROR: dict[type[e.TrusteeError], int] = {
    e.MalformedRequestError: 400,
    e.InvalidPolicyError: 400,
    e.AttestationError: 401,
    e.AdminForbiddenError: 403,
    e.PolicyNotFoundError: 404,
    e.PayloadTooLargeError: 413,
    e.UpstreamError: 503,
    e.PolicyEngineUnavailableError: 503,
}
SERVICE: web.AppKey[AttestationService] = web.AppKey("service", AttestationService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RUNTIME_KINDS = ("raw", "structured")
_INIT_KINDS = {"init_data_digest": "digest", "init_data_toml": "toml"}


def status_for(error: e.TrusteeError) -> int:
    return e.mapped_status(STATUS_BY_ERROR, error, 500)


def verification_request(item: object, index: int) -> VerificationRequest:
    """One `verification_requests` entry of upstream's REST body."""
    where = f"verification_requests[{index}]"
    if not isinstance(item, dict):
        raise e.MalformedRequestError(f"{where}: must be an object")
    tee, evidence = _string(item, "tee", where), _string(item, "evidence", where)
    algorithm = _string(item, "runtime_data_hash_algorithm", where, "sha384")
    try:
        return VerificationRequest.parse(tee=tee, evidence=evidence, runtime_data=_runtime(item.get("runtime_data"), where),
                                         init_data=_init(item.get("init_data"), where), hash_algorithm=algorithm)
    except e.MalformedRequestError as exc:
        raise e.MalformedRequestError(f"{where}: {exc.detail}") from None


def _string(item: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise e.MalformedRequestError(f"{where}.{key}: must be a string")
    return value


def _one_of(value: object, kinds: tuple[str, ...], where: str) -> tuple[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in kinds:
        raise e.MalformedRequestError(f"{where}: must be an object with exactly one of {', '.join(kinds)}")
    [(kind, inner)] = value.items()
    return kind, inner


def _runtime(value: object, where: str) -> tuple[str, str] | None:
    found = _one_of(value, _RUNTIME_KINDS, f"{where}.runtime_data")
    if found is None:
        return None
    kind, inner = found
    if kind == "structured":
        return kind, json.dumps(inner)
    if not isinstance(inner, str):
        raise e.MalformedRequestError(f"{where}.runtime_data.raw: must be a base64url string")
    return kind, inner


def _init(value: object, where: str) -> tuple[str, str] | None:
    found = _one_of(value, tuple(_INIT_KINDS), f"{where}.init_data")
    if found is None:
        return None
    kind, inner = found
    if not isinstance(inner, str):
        raise e.MalformedRequestError(f"{where}.init_data.{kind}: must be a string")
    return _INIT_KINDS[kind], inner


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = loads_json(await request.read(), "request body")
    if not isinstance(body, dict):
        raise e.MalformedRequestError("request body: must be a JSON object")
    return body


async def attestation(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    items, policy_ids = body.get("verification_requests"), body.get("policy_ids")
    if not isinstance(items, list) or not items:
        raise e.MalformedRequestError("verification_requests: must be a non-empty list")
    if not isinstance(policy_ids, list) or not all(isinstance(p, str) for p in policy_ids):
        raise e.MalformedRequestError("policy_ids: required, a list of strings ([] for the default policy)")
    requests = [verification_request(item, i) for i, item in enumerate(items)]
    token = await request.app[SERVICE].evaluate(requests, policy_ids)
    return web.Response(text=token)


def policy_writer(access: WriteAccess, audit: AuditSink) -> Handler:
    async def set_policy(request: web.Request) -> web.StreamResponse:
        _check_write(request, access)
        body = await _json_body(request)
        policy_id, encoded = body.get("policy_id"), body.get("policy")
        if not isinstance(policy_id, str) or not isinstance(encoded, str):
            raise e.MalformedRequestError('request body: must be {"policy_id": "...", "policy": "<base64url>"}')
        text = url_decode_text(encoded, "policy")
        await audited(audit, request.remote or "", "attestation_policy.set", {"policy_id": policy_id}, digest(text.encode()),
                      lambda: request.app[SERVICE].set_policy(policy_id, text))
        return web.Response()

    return set_policy


def _check_write(request: web.Request, access: WriteAccess) -> None:
    identity = _peer_identity(request) if access is WriteAccess.MUTUAL_TLS else None
    refusal = write_refusal(access, "Attestation Service", identity, "policy writes")
    if refusal is not None:
        raise refusal


def _peer_identity(request: web.Request) -> str | None:
    """The verified client certificate's common name (the TLS context requires one under mutual TLS)."""
    cert = request.transport.get_extra_info("peercert") if request.transport is not None else None
    if not cert:
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[0] if names else "(certificate without a common name)"


async def list_policies(request: web.Request) -> web.StreamResponse:
    return web.json_response([{"policy-id": pid} for pid, _ in await request.app[SERVICE].list_policies()])


async def challenge(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    if not all(isinstance(v, str) for v in body.values()):
        raise e.MalformedRequestError("request body: must be a flat object of strings")
    return web.Response(text=request.app[SERVICE].challenge(body))


async def jwks(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[SERVICE].jwks())


async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.Response()


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.TrusteeError as error:
        status = status_for(error)
        logger.log(logging.WARNING if status >= 500 else logging.DEBUG, "%s %s -> %s: %s", request.method,
                   e.clip(request.path), error.variant, error.detail)
        return web.json_response(error.to_json(), status=status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refusal = e.PayloadTooLargeError(f"request body is larger than {MAX_BODY_BYTES} bytes") if exc.status == 413 else \
            e.MalformedRequestError(f"{e.clip(request.method)} {e.clip(request.path)}: {exc.reason}")
        response = web.json_response(refusal.to_json(), status=exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception("unexpected error handling %s %s", request.method, request.path)
        return web.json_response(e.InternalError("internal error").to_json(), status=500)


def cors(allowed_origins: frozenset[str]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in allowed_origins or origin in allowed_origins)
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response()
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed_origins else str(origin)
            response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Vary"] = "Origin"
        return response

    return middleware


def make_app(service: AttestationService, access: WriteAccess, audit: AuditSink,
             allowed_origins: frozenset[str] = frozenset()) -> web.Application:
    middlewares: list[Middleware] = [cors(allowed_origins), errors] if allowed_origins else [errors]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[SERVICE] = service
    app.router.add_post("/attestation", attestation)
    app.router.add_post("/policy", policy_writer(access, audit))
    app.router.add_get("/policy", list_policies)
    app.router.add_post("/challenge", challenge)
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/healthz", healthz)
    return app
