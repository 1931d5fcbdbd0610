"""The typed application state the handlers share (one `web.AppKey`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from kbs.audit import KbsAudit
from kbs.core.admin import AdminAuthorizer
from kbs.core.ports import AttestationServicePort
from kbs.metrics import KbsMetrics
from kbs.plugins.base import ClientPlugin
from kbs.protocol import RcarService
from kbs.reports import ReportSink
from kbs.resources import AccessGate, PolicyStore, ResourceService
from trustee_common.storage import KeyValueStore


@dataclass
class KbsState:
    rcar: RcarService
    resources: ResourceService | None
    policies: PolicyStore
    admin: AdminAuthorizer
    attestation: AttestationServicePort
    metrics: KbsMetrics
    payload_limit_mib: int
    clock: Callable[[], float] = field(default=time.time)
    audit: KbsAudit = field(default_factory=KbsAudit)
    #: False when /metrics is served on its own address (`[metrics] address`) instead of the main sockets.
    metrics_on_main: bool = True
    #: `[http_server] max_in_flight_requests` and `retry_after_seconds` (`kbs.http.shed`).
    max_in_flight_requests: int = 128
    retry_after_seconds: int = 1
    #: `[http_server] admission_target_latency_ms` in seconds (0: the limit stays at max_in_flight_requests).
    target_latency_seconds: float = 0.0
    #: `[[plugins]] name = "sample"` configured: `/kbs/v0/sample/...` is served.
    sample_plugin: bool = False
    #: `[attestation_reports]` enabled: the writer, and the store the admin API lists them from.
    reports: ReportSink | None = None
    report_store: KeyValueStore | None = None
    #: The plugins of `kbs.plugins` by name (`/kbs/v0/<name>/...`), and the gate their token-gated requests pass.
    plugins: dict[str, ClientPlugin] = field(default_factory=dict)
    plugin_gate: AccessGate | None = None


STATE = web.AppKey("kbs_state", KbsState)
