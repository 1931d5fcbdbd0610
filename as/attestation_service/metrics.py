"""Prometheus metrics of one Attestation Service (its own registry; served at `[metrics] address`).

- `as_attestation_evaluations_total{tee, result}`: one per appraised submod,
  `result` its EAR status (`affirming`, `warning`, `contraindicated`, `none`),
  or one per verification request with `result="error"` (and the error's
  variant in `as_attestation_errors_total{tee, type}`) when the request failed;
- `as_attestation_evaluation_duration_seconds{tee}`: the whole evaluation,
  labelled by the first request's TEE;
- `as_policy_changes_total{action}`: `set` and `delete`;
- `as_appraisal_input_reads_total{input}`: reads behind the appraisal cache,
  `epoch` (storage + RVPS), `policy` (storage), `reference_values` (RVPS);
- `as_audit_write_failures_total`: audit events that could not be written;
- `as_grpc_requests_total{method, code}`, `as_grpc_request_duration_seconds{method}`
  (`trustee_common.grpc_observe`), the RVPS proxy's calls included.

With several workers (`--workers`) a scrape at any of them reports the
totals of all (`trustee_common.metrics_http.exposition`).

Labels take only TEE names the protocol knows, EAR statuses and error
variants, so a client cannot grow the label set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trustee_common.grpc_observe import LATENCY_BUCKETS, RpcMetrics

VERSION = "0.1.0"


class AsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """`registry`: another service's (the KBS's, when the AS is embedded in it); default: a registry of its own."""
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        reg = self.registry
        Gauge("as_build_info", "Attestation Service build information", ["version", "implementation"], registry=reg,
              multiprocess_mode="max").labels(
            VERSION, "pytrustee"
        ).set(1)
        self.rpc = RpcMetrics("as", reg)
        self.evaluations = Counter("as_attestation_evaluations", "appraised submods by TEE and EAR status (or error)", ["tee", "result"],
                                   registry=reg)
        self.errors = Counter("as_attestation_errors", "failed verification requests by TEE and error variant", ["tee", "type"],
                              registry=reg)
        self.latency = Histogram("as_attestation_evaluation_duration_seconds", "AttestationEvaluate latency", ["tee"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.policy_changes = Counter("as_policy_changes", "attestation policies set or deleted", ["action"], registry=reg)
        self.input_reads = Counter("as_appraisal_input_reads", "appraisal epoch, policy and reference-value reads (cache misses)",
                                   ["input"], registry=reg)
        self.audit_write_failures = Counter("as_audit_write_failures", "audit events that could not be written", registry=reg)
