"""Attestation reports off the `/attest` path: a bounded queue, one writer task, signed JWS in storage.

`/attest` hands `ReportSink.record` the facts it already has (a few
references: no parsing, no signing, no I/O) and answers. The writer task
builds the report (`kbs.core.reports`), signs it as a compact JWS (ES256,
header `jwk` with the AS's `x5c` chain, `typ` = `kbs-attestation-report+jwt`)
with the AS's token key, and stores it in namespace
`kbs_attestation_report` with an expiry of `retention_days`. When the
queue is full or the store fails the report is dropped, logged and counted
(`kbs_attestation_reports_lost_total`); `/attest` never waits for it.
Reports waiting together are written together (up to `WRITE_BATCH`, one
store transaction, one fsync on SQLite): under load the cost of a report is
its signature, not a commit.
Expired reports are purged by the same task every `PURGE_INTERVAL_SECONDS`
(the store purges in short batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attestation_service.core.token import TokenSigner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kbs.config import AttestationReportsConfig
from kbs.core.jws import parse_compact
from kbs.core.reports import REPORT_NAMESPACE, REPORT_TYPE, AttestationFacts, ReportQuery, build_report, report_key, select_keys
from kbs.metrics import KbsMetrics
from trustee_common.b64 import url_encode
from trustee_common.errors import ConfigError, TrusteeError
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 300.0
#: Queued reports written in one store transaction, at most.
WRITE_BATCH = 64
#: At most one warning about lost reports per this many seconds (each loss is counted in the metric).
LOST_LOG_INTERVAL_SECONDS = 10.0
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ES256 = ec.ECDSA(hashes.SHA256())


class ReportSigner:
    """ES256 with the AS token key; the header carries its public JWK (with the `x5c` chain when configured).

    `typ` is `kbs-attestation-report+jwt` and a report has no `exp`, so the
    KBS's token verifier (which requires `exp`) never takes one for an
    attestation token."""

    def __init__(self, signer: TokenSigner) -> None:
        self._key: ec.EllipticCurvePrivateKey = signer._key  # the AS's signer object, reused (same key, same JWK)
        header = {"alg": "ES256", "typ": REPORT_TYPE, "jwk": signer.public_jwk}
        self._header = url_encode(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())

    def sign(self, report: dict[str, Any]) -> str:
        signing_input = f"{self._header}.{url_encode(_COMPACT.encode(report).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode("ascii"), _ES256))
        return f"{signing_input}.{url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"attestation_reports.{key}: cannot read {path}: {exc.strerror}") from None


def load_report_signer(config: AttestationReportsConfig, builtin: TokenSigner | None) -> ReportSigner:
    """The configured key and chain; else the embedded AS's signer; else a `ConfigError`."""
    if config.signing_key is None:
        if builtin is None:
            raise ConfigError("attestation_reports.signing_key: required with coco_as_grpc (the AS's token key, e.g. "
                              "<data-dir>/as/token.key), or set attestation_reports.enabled = false")
        return ReportSigner(builtin)
    chain = None if config.cert_chain is None else _read(config.cert_chain, "cert_chain")
    try:
        return ReportSigner(TokenSigner.from_pem(_read(config.signing_key, "signing_key"), chain))
    except ConfigError as exc:
        raise ConfigError(f"attestation_reports: {exc.detail}") from None


class ReportSink:
    """The bounded queue and its writer task; `record` never blocks and never raises."""

    def __init__(self, store: KeyValueStore, signer: ReportSigner, metrics: KbsMetrics, *, retention_seconds: float,
                 queue_size: int) -> None:
        self._store = store
        self._signer = signer
        self._metrics = metrics
        self._retention = retention_seconds
        self._queue: asyncio.Queue[AttestationFacts] = asyncio.Queue(maxsize=queue_size)
        self._last_lost_log: float | None = None
        self._lost_since_log = 0

    def record(self, facts: AttestationFacts) -> None:
        try:
            self._queue.put_nowait(facts)
        except asyncio.QueueFull:
            self._lost("the report queue is full")

    def _lost(self, why: str, count: int = 1) -> None:
        """Count every loss; log at most one line per `LOST_LOG_INTERVAL_SECONDS` (a full queue can lose many per second)."""
        self._metrics.reports_lost.inc(count)
        self._lost_since_log += count
        now = time.monotonic()
        if self._last_lost_log is not None and now - self._last_lost_log < LOST_LOG_INTERVAL_SECONDS:
            return
        logger.warning("attestation report(s) lost: %d since the last report of this (latest: %s)", self._lost_since_log, why)
        self._last_lost_log, self._lost_since_log = now, 0

    async def run(self) -> None:
        """Write queued reports, and purge expired ones every `PURGE_INTERVAL_SECONDS`, until cancelled."""
        await asyncio.gather(self._writer(), self._purger())

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._write(self._take_queued(batch))

    async def _purger(self) -> None:
        while True:
            await self._purge()
            await asyncio.sleep(PURGE_INTERVAL_SECONDS)

    async def drain(self) -> None:
        """Write what is queued (at shutdown)."""
        while not self._queue.empty():
            await self._write(self._take_queued([]))

    def _take_queued(self, batch: list[AttestationFacts]) -> list[AttestationFacts]:
        while len(batch) < WRITE_BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[AttestationFacts]) -> None:
        entries = []
        for facts in batch:
            try:
                entries.append(self._signed_entry(facts))
            except Exception as exc:  # a report that cannot be built is lost alone
                self._lost(f"{type(exc).__name__}: {exc}")
        if not entries:
            return
        try:
            await self._store.put_many(REPORT_NAMESPACE, entries)
        except Exception as exc:  # storage down, or anything else: the reports are lost, /attest is not affected
            self._lost(f"{type(exc).__name__}: {exc}", len(entries))
            return
        self._metrics.reports_written.inc(len(entries))

    def _signed_entry(self, facts: AttestationFacts) -> tuple[str, bytes, float]:
        report_id = secrets.token_hex(8)
        report = build_report(facts, report_id, _claims(facts))
        key = report_key(report.get("instance_id"), facts.time, report_id)
        return key, self._signer.sign(report).encode(), facts.time + self._retention

    async def _purge(self) -> None:
        try:
            purged = await self._store.purge_expired()
        except Exception:
            logger.exception("purging expired attestation reports failed")
            return
        if purged:
            logger.debug("purged %d expired entries (attestation reports among them)", purged)


def _claims(facts: AttestationFacts) -> Mapping[str, Any] | None:
    """The token's claims: as the KBS verified them, else read from the token our AS just issued."""
    if facts.claims is not None or facts.token is None:
        return facts.claims
    try:
        return parse_compact(facts.token, TrusteeError).claims
    except TrusteeError:
        return None


async def list_reports(store: KeyValueStore, query: ReportQuery) -> dict[str, Any]:
    """`{"reports": [compact JWS, ...], "next_cursor"?: str}`, newest first."""
    page, cursor = select_keys(await store.list_keys(REPORT_NAMESPACE), query)
    reports = []
    for key in page:
        value = await store.get(REPORT_NAMESPACE, key)
        if value is not None:  # expired between the listing and the read
            reports.append(value.decode())
    body: dict[str, Any] = {"reports": reports}
    if cursor is not None:
        body["next_cursor"] = cursor
    return body


@contextlib.asynccontextmanager
async def running(sink: ReportSink | None) -> Any:
    """Run the writer task for the duration of the block; at exit write what is queued."""
    if sink is None:
        yield
        return
    task = asyncio.create_task(sink.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.drain()
