"""gRPC adapter: the one table from `TrusteeError` classes to status codes.

Servers wrap each RPC with `rpc_errors`: a `TrusteeError` aborts with its
mapped code, its detail as the message and its variant in the
`trustee-error-variant` trailer; anything else is logged and becomes a
generic INTERNAL error (no traceback reaches the client). Clients call
`error_from_rpc` to rebuild the same `TrusteeError` class.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from trustee_common import errors as e

logger = logging.getLogger(__name__)

VARIANT_TRAILER = "trustee-error-variant"
#: UTF-8 bytes of an error message sent in the `grpc-message` trailer. gRPC
#: percent-encodes it (up to 3x) and drops trailers over its 8 KiB metadata
#: limit, which the caller then sees as a transport failure.
MAX_MESSAGE_BYTES = 1024

STATUS_BY_ERROR: dict[type[e.TrusteeError], grpc.StatusCode] = {
    e.MalformedRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    e.PayloadTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InvalidPolicyError: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidReferenceValueError: grpc.StatusCode.INVALID_ARGUMENT,
    e.TokenNotFoundError: grpc.StatusCode.UNAUTHENTICATED,
    e.TokenVerifierError: grpc.StatusCode.UNAUTHENTICATED,
    e.AttestationError: grpc.StatusCode.PERMISSION_DENIED,
    e.AdminAuthError: grpc.StatusCode.UNAUTHENTICATED,
    e.AdminForbiddenError: grpc.StatusCode.PERMISSION_DENIED,
    e.PolicyDenyError: grpc.StatusCode.PERMISSION_DENIED,
    e.PluginNotFoundError: grpc.StatusCode.NOT_FOUND,
    e.PluginInternalError: grpc.StatusCode.FAILED_PRECONDITION,
    e.ResourceNotFoundError: grpc.StatusCode.NOT_FOUND,
    e.PolicyNotFoundError: grpc.StatusCode.NOT_FOUND,
    e.ReferenceValueNotFoundError: grpc.StatusCode.NOT_FOUND,
    e.ImageNotFoundError: grpc.StatusCode.NOT_FOUND,
    e.ImageIntegrityError: grpc.StatusCode.DATA_LOSS,
    e.UnsafeImageError: grpc.StatusCode.FAILED_PRECONDITION,
    e.UpstreamError: grpc.StatusCode.UNAVAILABLE,
    e.PolicyEngineUnavailableError: grpc.StatusCode.UNAVAILABLE,
    e.ServerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    e.StorageError: grpc.StatusCode.INTERNAL,
    e.InternalError: grpc.StatusCode.INTERNAL,
}


def status_for(error: e.TrusteeError) -> grpc.StatusCode:
    return e.mapped_status(STATUS_BY_ERROR, error, grpc.StatusCode.INTERNAL)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: e.TrusteeError) -> NoReturn:
    context.set_trailing_metadata(((VARIANT_TRAILER, error.variant),))
    await context.abort(status_for(error), wire_message(error.public_detail))
    raise AssertionError("unreachable: context.abort raises")


def wire_message(detail: str) -> str:
    """`detail` cut to `MAX_MESSAGE_BYTES` of UTF-8 (on a character boundary), with an ellipsis when cut."""
    raw = detail.encode("utf-8")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return detail
    return raw[: MAX_MESSAGE_BYTES - len(e.ELLIPSIS.encode())].decode("utf-8", errors="ignore") + e.ELLIPSIS


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def rpc_errors(method: F) -> F:
    """Decorator for async servicer methods `(self, request, context)`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except e.TrusteeError as error:
            logger.info("%s failed: %s: %s", method.__name__, error.variant, error.detail)
            await abort_with(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            logger.exception("%s failed with an unexpected error", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper  # type: ignore[return-value]


def error_from_rpc(exc: grpc.aio.AioRpcError, service: str) -> e.TrusteeError:
    """Turn a failed call into the `TrusteeError` the server raised."""
    trailers = exc.trailing_metadata() or ()
    variant = next((str(v) for k, v in trailers if k == VARIANT_TRAILER), None)
    detail = exc.details() or ""
    if variant is not None:
        return e.error_from_variant(variant, detail, forbidden=exc.code() == grpc.StatusCode.PERMISSION_DENIED)
    # Transport details name internal addresses: they go to the log, not to the caller.
    logger.info("%s call failed: %s: %s", service, exc.code().name, detail)
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return e.UpstreamError(f"{service} unavailable")
    return e.UpstreamError(f"{service} failed ({exc.code().name})")
