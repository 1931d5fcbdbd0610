"""Prometheus metrics of one RVPS (its own registry; served at `[metrics] address`).

- `rvps_registrations_total{result}`: `ok` or the error variant;
- `rvps_queries_total{result}`: `found`, `absent` or the error variant;
- `rvps_audit_write_failures_total`: audit events that could not be written;
- `rvps_grpc_requests_total{method, code}`, `rvps_grpc_request_duration_seconds{method}`
  (`trustee_common.grpc_observe`).

Labels never hold reference-value names (client input).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from trustee_common.grpc_observe import RpcMetrics

VERSION = "0.1.0"


class RvpsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        Gauge("rvps_build_info", "RVPS build information", ["version", "implementation"], registry=reg).labels(VERSION, "pytrustee").set(1)
        self.rpc = RpcMetrics("rvps", reg)
        self.registrations = Counter("rvps_registrations", "reference value registration messages by result", ["result"], registry=reg)
        self.queries = Counter("rvps_queries", "reference value queries by result", ["result"], registry=reg)
        self.audit_write_failures = Counter("rvps_audit_write_failures", "audit events that could not be written", registry=reg)
