"""gRPC server adapter: the request id and per-method metrics of every RPC.

`ObservingInterceptor` wraps each unary-unary method of a `grpc.aio`
server: it takes the caller's request id from the `x-request-id`
metadata (or assigns a fresh one when there is none or it is malformed),
keeps it in `trustee_common.requestid.REQUEST_ID` while the method runs, so
every log line of the call and every outgoing gRPC call it makes (the AS
to the RVPS) carries it, and counts the call by method and status code
with its latency. One DEBUG line per call; nothing at INFO on this path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from trustee_common.requestid import REQUEST_ID, from_metadata, new_request_id

logger = logging.getLogger(__name__)

#: Latency buckets (seconds) for gRPC calls and evaluations: 1 ms to 60 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RpcMetrics:
    """`<prefix>_grpc_requests_total{method, code}` and `<prefix>_grpc_request_duration_seconds{method}`."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.requests = Counter(f"{prefix}_grpc_requests", "gRPC calls served, by method and status code", ["method", "code"],
                                registry=registry)
        self.latency = Histogram(f"{prefix}_grpc_request_duration_seconds", "gRPC call latency by method", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=registry)


def _method_name(full: str) -> str:
    """`/package.Service/Method` -> `Method`."""
    return full.rsplit("/", 1)[-1] or full


def _code_of(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> str:
    code: object = context.code()  # None when the method returned without setting one
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if failed else "OK"


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: RpcMetrics | None = None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = _method_name(str(handler_call_details.method))
        incoming: Any = handler_call_details.invocation_metadata
        rid = from_metadata(incoming) or new_request_id()
        inner: Any = handler.unary_unary
        metrics = self._metrics

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = REQUEST_ID.set(rid)
            start = time.perf_counter()
            failed = True
            try:
                response = await inner(request, context)
                failed = False
                return response
            finally:
                elapsed = time.perf_counter() - start
                code = _code_of(context, failed)
                if metrics is not None:
                    metrics.requests.labels(method, code).inc()
                    metrics.latency.labels(method).observe(elapsed)
                logger.debug("rpc %s -> %s in %.1f ms", method, code, elapsed * 1000)
                REQUEST_ID.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
