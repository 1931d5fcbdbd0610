"""HTTP adapter: the one table from `TrusteeError` classes to HTTP statuses, and the error middleware.

Every error body is `TrusteeError.to_json()` (`{"type", "detail"}`) as
`application/json`. aiohttp's own HTTP errors (oversize body, unknown
route, bad method) are rewritten into the same shape, and so are requests
its parser refuses (`malformed_http_response`, via trustee_common.http_serving). Anything that is not
a `TrusteeError` is logged with its traceback and answered with a generic
500 `InternalError`; no traceback reaches the client. docs/errors.md lists
this table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kbs.errors import InvalidRequestPathError, MethodNotAllowedError
from kbs.http.state import STATE
from trustee_common import errors as e
from trustee_common.jose import JweError

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[e.TrusteeError], int] = {
    e.MalformedRequestError: 400,
    e.InvalidPolicyError: 400,
    e.InvalidReferenceValueError: 400,
    e.TokenNotFoundError: 401,
    e.TokenVerifierError: 401,
    e.AttestationError: 401,
    e.AdminAuthError: 401,
    e.AdminForbiddenError: 403,
    e.PolicyDenyError: 403,
    e.PluginInternalError: 401,
    e.PluginNotFoundError: 404,
    InvalidRequestPathError: 404,
    e.ResourceNotFoundError: 404,
    e.PolicyNotFoundError: 404,
    e.ReferenceValueNotFoundError: 404,
    MethodNotAllowedError: 405,
    e.PayloadTooLargeError: 413,
    e.ImageNotFoundError: 404,
    e.ImageIntegrityError: 502,
    e.UnsafeImageError: 502,
    e.UpstreamError: 503,
    e.PolicyEngineUnavailableError: 503,
    e.ServerBusyError: 503,
    JweError: 500,
    e.ConfigError: 500,
    e.StorageError: 500,
    e.InternalError: 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_for(error: e.TrusteeError) -> int:
    return e.mapped_status(STATUS_BY_ERROR, error, 500)


def error_response(error: e.TrusteeError) -> web.Response:
    response = web.Response(status=status_for(error), text=json.dumps(error.to_json()), content_type="application/json")
    if isinstance(error, MethodNotAllowedError) and error.allowed:
        response.headers["Allow"] = ", ".join(error.allowed)
    if isinstance(error, e.ServerBusyError) and error.retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(error.retry_after))
    return response


def raw_response(error: e.TrusteeError) -> bytes:
    """`error_response(error)` as the bytes of a whole HTTP/1.1 response that closes its connection: the answer
    to a connection refused before aiohttp reads it (`trustee_common.http_serving`, `busy`)."""
    response = error_response(error)
    body = response.body if isinstance(response.body, bytes) else b""
    lines = [f"HTTP/1.1 {response.status} {response.reason}", *(f"{k}: {v}" for k, v in response.headers.items()),
             f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def malformed_http_response(reason: str) -> web.Response:
    """The answer to a request aiohttp's parser refused (trustee_common.http_serving): 400 `MalformedRequest`."""
    return error_response(e.MalformedRequestError(reason))


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> e.TrusteeError:
    if exc.status == 413:
        limit = request.app[STATE].payload_limit_mib
        return e.PayloadTooLargeError(f"request body is larger than payload_request_size ({limit} MiB)")
    if exc.status == 404:
        return InvalidRequestPathError(f"Request path {e.clip(request.path)} is invalid")
    if exc.status == 405:
        allowed = tuple(sorted(getattr(exc, "allowed_methods", ())))
        detail = f"method {e.clip(request.method)} is not allowed on {e.clip(request.path)}"
        return MethodNotAllowedError(detail + (f" (allowed: {', '.join(allowed)})" if allowed else ""), allowed)
    if 400 <= exc.status < 500:
        return e.MalformedRequestError(exc.reason)
    return e.InternalError("internal error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.TrusteeError as error:
        # Client errors are counted by status in metrics (and releases/denials audited), not logged per
        # request at INFO: a flood of bad requests must not become a flood of log lines.
        level = logging.WARNING if status_for(error) >= 500 else logging.DEBUG
        logger.log(level, "%s %s -> %s: %s", request.method, e.clip(request.path), error.variant, error.detail)
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc, request))
    except HttpProcessingError as exc:  # a body that breaks HTTP framing (bad chunk, bad encoding)
        logger.debug("%s %s -> malformed body: %s", request.method, e.clip(request.path), type(exc).__name__)
        return error_response(e.MalformedRequestError("request body is not valid HTTP framing"))
    except ConnectionError:  # the client went away mid-request: nobody to answer
        logger.debug("%s %s: client connection lost", request.method, request.path)
        return error_response(e.MalformedRequestError("client connection lost"))
    except Exception:
        logger.exception("unexpected error handling %s %s", request.method, request.path)
        return error_response(e.InternalError("internal error"))
