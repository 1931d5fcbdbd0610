"""Prometheus counters of one KBS instance (upstream names, kbs/docs/metrics.md).

Each instance has its own registry (no module-level globals), rendered by
`GET /metrics`. Resource counters carry no `resource_path` label, unlike
upstream: `/metrics` is unauthenticated and must not list resource names.
With several workers (`--workers`) every scrape reports the totals of all
workers (`trustee_common.metrics_http.exposition`): counters add up, gauges
declare how they combine (`multiprocess_mode`: in-flight requests and the
policy-engine counts are summed over the live workers). No gauge uses a
callback (`set_function`), which multiprocess mode cannot collect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trustee_common.metrics_http import exposition

CONTENT_TYPE = CONTENT_TYPE_LATEST
VERSION = "0.1.0"


class PolicyEngineCounts(Protocol):
    compilations: int
    replaced: int
    on_count: Callable[[], None]


class KbsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        build = Gauge("kbs_build_info", "KBS build information", ["version", "implementation"], registry=reg,
                      multiprocess_mode="max")
        build.labels(VERSION, "pytrustee").set(1)
        self.http_requests = Counter("kbs_http_requests", "HTTP requests under /kbs", ["method", "status"], registry=reg)
        self.auth_requests = Counter("kbs_auth_requests", "RCAR /auth requests", registry=reg)
        self.auth_successes = Counter("kbs_auth_successes", "successful /auth requests", registry=reg)
        self.auth_errors = Counter("kbs_auth_errors", "failed /auth requests", registry=reg)
        self.attestation_requests = Counter("kbs_attestation_requests", "RCAR /attest requests", registry=reg)
        self.attestation_successes = Counter("kbs_attestation_successes", "successful attestations", ["tee_type"], registry=reg)
        self.attestation_failures = Counter("kbs_attestation_failures", "rejected attestations", ["tee_type"], registry=reg)
        self.attestation_errors = Counter("kbs_attestation_errors", "/attest requests failed before evaluation", registry=reg)
        self.resource_reads = Counter("kbs_resource_reads", "resources released", registry=reg)
        self.resource_writes = Counter("kbs_resource_writes", "resources written by an admin", registry=reg)
        self.resource_deletes = Counter("kbs_resource_deletes", "resources deleted by an admin", registry=reg)
        self.policy_evaluations = Counter("kbs_policy_evaluations", "resource policy evaluations", registry=reg)
        self.policy_approvals = Counter("kbs_policy_approvals", "resource policy approvals", registry=reg)
        self.policy_violations = Counter("kbs_policy_violations", "resource policy denials", registry=reg)
        self.policy_errors = Counter("kbs_policy_errors", "resource policy evaluation errors", registry=reg)
        self.stale_tokens = Counter("kbs_stale_tokens", "tokens refused as appraised under an older appraisal epoch", registry=reg)
        self.epoch_fetches = Counter("kbs_appraisal_epoch_fetches", "GetAppraisalEpoch calls to the AS, failed ones included", registry=reg)
        self.audit_write_failures = Counter("kbs_audit_write_failures", "audit events that could not be written", registry=reg)
        self.reports_written = Counter("kbs_attestation_reports_written", "attestation reports signed and stored", registry=reg)
        self.reports_lost = Counter("kbs_attestation_reports_lost",
                                    "attestation reports dropped (queue full or storage failed); /attest was answered", registry=reg)
        self.requests_in_flight = Gauge("kbs_http_requests_in_flight", "requests under /kbs in progress (max_in_flight_requests bounds it)",
                                        registry=reg, multiprocess_mode="livesum")
        self.requests_shed = Counter("kbs_http_requests_shed", "requests refused with 503 ServerBusy at the admission limit",
                                     registry=reg)
        self.admission_limit = Gauge("kbs_http_admission_limit",
                                     "requests the KBS admits at once now (adapts below max_in_flight_requests to the latency target)",
                                     registry=reg, multiprocess_mode="livesum")
        # Upstream's per-plugin metrics (the `external` plugin's backends, by backend name).
        self.plugin_requests = Counter("kbs_plugin_requests", "external plugin Handle calls", ["plugin_name"], registry=reg)
        self.plugin_duration = Histogram("kbs_plugin_request_duration_seconds", "external plugin Handle call duration",
                                         ["plugin_name"], registry=reg)
        self.plugin_errors = Counter("kbs_plugin_errors", "external plugin gRPC calls that failed", ["plugin_name"], registry=reg)

    def watch_policy_engine(self, engine: PolicyEngineCounts) -> None:
        """Ours: policies compiled by the Rego workers, and workers killed (time limit) or lost."""
        reg = self.registry
        compiled = Gauge("kbs_policy_compilations", "resource policies compiled by the policy workers", registry=reg,
                         multiprocess_mode="livesum")
        replaced = Gauge("kbs_policy_workers_replaced", "policy workers killed for overrunning or lost", registry=reg,
                         multiprocess_mode="livesum")

        def update() -> None:
            compiled.set(engine.compilations)
            replaced.set(engine.replaced)

        engine.on_count = update
        update()

    def render(self) -> bytes:
        return exposition(self.registry)
