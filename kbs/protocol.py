"""The RCAR handshake service: `/auth` and `/attest` over the session store and the AS.

Sessions live in the `kbs_protocol_session` namespace with their expiry
passed to the store. A nonce is usable once: the first `/attest` takes the
`Authed` session with an atomic `pop` (one store round trip), so of two
concurrent attempts only one proceeds; a failed attempt leaves no session
(the guest starts again with `/auth`), a successful one stores the
`Attested` session holding the token and the claims the KBS verified
(signature, x5c chain, times) once, here, so cookie requests reuse them.
Popping an already `Attested` session (a replayed `/attest`) puts it back.
This module knows no HTTP or gRPC.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from kbs.audit import KbsAudit
from kbs.core.audit_events import attestation_event
from kbs.core.evidence import POLICY_IDS, evidence_items
from kbs.core.ports import AttestationServicePort
from kbs.core.reports import AttestationFacts, ReportRecorder
from kbs.core.session import (
    SESSION_NAMESPACE,
    AttestedSession,
    AuthedSession,
    RandomBytes,
    attested,
    check_nonce,
    check_session_id,
    decode_session,
    encode_session,
    is_expired,
    new_session,
)
from kbs.core.token import AttestationTokenVerifier
from kbs.metrics import KbsMetrics
from trustee_common.errors import AttestationError, TokenVerifierError, TrusteeError, UpstreamError
from trustee_common.messages import Attestation, Request
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

_REUSED = "RCAR handshake Attest failed: the session's nonce was already used (call /auth again)"
_UNKNOWN = "RCAR handshake Attest failed: unknown, expired or already used session (call /auth again)"


class RcarService:
    def __init__(
        self,
        store: KeyValueStore,
        attestation: AttestationServicePort,
        metrics: KbsMetrics,
        *,
        lifetime: float,
        clock: Callable[[], float] = time.time,
        random_bytes: RandomBytes = secrets.token_bytes,
        audit: KbsAudit | None = None,
        verifier: AttestationTokenVerifier | None = None,
        reports: ReportRecorder | None = None,
        challenge_params: Callable[[str, Any], Any] | None = None,
    ) -> None:
        #: The challenge's extra-params from the tee and the request's (Intel Trust Authority); None: `""`.
        self._challenge_params = challenge_params
        self._reports = reports
        self._audit = audit or KbsAudit()
        self._verifier = verifier
        self._store = store
        self._as = attestation
        self._metrics = metrics
        self._lifetime = lifetime
        self._clock = clock
        self._random = random_bytes

    async def auth(self, body: object) -> AuthedSession:
        """Parse the `Request`, create and store a session; its challenge goes back to the guest."""
        self._metrics.auth_requests.inc()
        try:
            request = Request.from_json(body)
            extra = "" if self._challenge_params is None else self._challenge_params(request.tee, request.extra_params)
            session = new_session(request, now=self._clock(), lifetime=self._lifetime, random_bytes=self._random,
                                  extra_params=extra)
            await self._store.put(SESSION_NAMESPACE, session.id, encode_session(session), expires_at=session.expires_at)
        except TrusteeError:
            self._metrics.auth_errors.inc()
            raise
        self._metrics.auth_successes.inc()
        logger.debug("session %s created for tee %s", session.id[:8], request.tee)
        return session

    async def attest(self, session_id: str | None, body: object, origin: Mapping[str, Any] | None = None) -> AttestedSession:
        """Check the nonce, have the AS appraise the evidence, and keep the token in the session (audited)."""
        self._metrics.attestation_requests.inc()
        origin = origin or {}
        try:
            attestation = Attestation.from_json(body)
            session = await self._take_authed(check_session_id(session_id))
        except TrusteeError as exc:
            self._metrics.attestation_errors.inc()
            self._audit.best_effort(attestation_event("rejected", origin, None, error=exc))
            raise
        tee = session.request.tee
        init_data = None if attestation.init_data is None else attestation.init_data.body
        try:
            check_nonce(session, attestation.runtime_data.nonce)
            token = await self._as.evaluate(evidence_items(tee, attestation), list(POLICY_IDS))
        except UpstreamError as exc:
            self._metrics.attestation_errors.inc()
            self._audit.best_effort(attestation_event("error", origin, tee, error=exc))
            self._report("error", tee, init_data, error=exc)
            raise
        except TrusteeError as exc:
            self._metrics.attestation_failures.labels(tee).inc()
            self._audit.best_effort(attestation_event("rejected", origin, tee, error=exc))
            logger.debug("attestation of session %s (%s) rejected: %s", session.id[:8], tee, exc.detail)
            self._report("rejected", tee, init_data, error=exc)
            raise
        claims = await self._verified_claims(token)
        done = attested(session, token, claims)
        await self._store.put(SESSION_NAMESPACE, done.id, encode_session(done), expires_at=done.expires_at)
        self._report("attested", tee, init_data, token=token, claims=claims)
        self._metrics.attestation_successes.labels(tee).inc()
        if self._audit.log is not None:
            self._audit.best_effort(attestation_event("attested", origin, tee, token, claims=claims))
        logger.debug("session %s attested (%s)", session.id[:8], tee)
        return done

    def _report(self, outcome: str, tee: str, init_data: str | None, *, token: str | None = None,
                claims: dict[str, Any] | None = None, error: TrusteeError | None = None) -> None:
        """Queue the attestation report (`kbs.reports`): no I/O, no parsing here."""
        if self._reports is not None:
            self._reports.record(AttestationFacts(self._clock(), outcome, tee, token, claims, error, init_data))

    async def _verified_claims(self, token: str) -> dict[str, Any] | None:
        """The token's claims if the KBS's own verification accepts it; None leaves it to each request."""
        if self._verifier is None:
            return None
        try:
            return await self._verifier.verify_fresh(token, self._clock())
        except TokenVerifierError:
            return None  # every resource request will verify (and refuse) the token itself

    async def _take_authed(self, session_id: str) -> AuthedSession:
        """Atomically remove and return the live `Authed` session, refusing a used nonce."""
        taken = await self._store.pop(SESSION_NAMESPACE, session_id)
        if taken is None:
            raise AttestationError(_UNKNOWN)  # unknown, expired, or taken by a concurrent /attest
        session = decode_session(taken)
        if isinstance(session, AttestedSession):
            # A replayed /attest on an attested session: put it back untouched.
            await self._store.put(SESSION_NAMESPACE, session_id, taken, overwrite=False, expires_at=session.expires_at)
            raise AttestationError(_REUSED)
        if is_expired(session, self._clock()):
            raise AttestationError(_UNKNOWN)
        return session

    async def attested_session(self, session_id: str | None) -> AttestedSession | None:
        """The live `Attested` session named by the cookie, else None."""
        try:
            sid = check_session_id(session_id)
            raw = await self._store.get(SESSION_NAMESPACE, sid)
            session = None if raw is None else decode_session(raw)
        except AttestationError:
            return None
        if isinstance(session, AttestedSession) and not is_expired(session, self._clock()):
            return session
        return None

    async def purge_expired(self) -> int:
        return await self._store.purge_expired()
