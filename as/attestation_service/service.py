"""One attestation request end to end, and the policy administration around it.

`AttestationService.evaluate` (trustee-server.md 6.4): verify every
request with its TEE's verifier, annotate the claims, read the policy
`<policy_ids[0]>_<class>` (the compiled form is cached by text digest),
fetch the reference values that policy names from the RVPS (only those;
all of them only when a call's argument is computed), evaluate (in a policy worker process, within the
configured time limit), and sign one EAR with a submod per item (`cpu0`,
`gpu0`, `gpu1`, ...). Policy texts and reference values come from the
`AppraisalCache` snapshot of the appraisal epoch (policies plus reference
values, `trustee_common.epoch`); that epoch is stamped into the token, so
the KBS can refuse tokens appraised before a later change (the cache
module explains why this stays correct across replicas). The pure steps live
in `core`; this module only sequences them with the store and the RVPS.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attestation_service.appraisal_cache import DEFAULT_TTL_SECONDS, AppraisalCache, Snapshot
from attestation_service.core.appraisal import appraisal
from attestation_service.core.claims import annotate
from attestation_service.core.policy import DEFAULT_POLICY_ID, CompiledPolicy, PolicyCache, check_policy_id, policy_digest, storable
from attestation_service.core.request import VerificationRequest
from attestation_service.core.token import TokenSettings, TokenSigner, ear_claims
from attestation_service.core.verifier import ReferenceValueAnchored, Verifier
from attestation_service.metrics import AsMetrics
from attestation_service.policies import default_policies
from attestation_service.policy_store import PolicyStore
from rvps.ports import ReferenceValueProvider
from trustee_common.b64 import std_encode
from trustee_common.errors import (
    InternalError,
    InvalidPolicyError,
    MalformedRequestError,
    PolicyNotFoundError,
    TrusteeError,
)
from trustee_common.rego_escapes import undecoded_warning
from trustee_common.rego_pool import RegoPool
from trustee_common.tee import TEE_CLASSES, parse_tee

logger = logging.getLogger(__name__)

NONCE_BYTES = 32
CHALLENGE_UNSUPPORTED_TEES = ("se",)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class AttestationService:
    def __init__(
        self,
        policies: PolicyStore,
        reference_values: ReferenceValueProvider,
        signer: TokenSigner,
        settings: TokenSettings,
        verifiers: Mapping[str, Verifier],
        engine: RegoPool,
        *,
        verbose_token: bool = True,
        clock: Callable[[], datetime.datetime] = utc_now,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        metrics: AsMetrics | None = None,
        cache_ttl: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.metrics = metrics or AsMetrics()
        self._policies = policies
        self.inputs = AppraisalCache(
            policies, reference_values, cache_ttl, clock, on_read=lambda name: self.metrics.input_reads.labels(name).inc()
        )
        self._signer = signer
        self._settings = settings
        self._verifiers = dict(verifiers)
        #: Found once: a runtime Protocol isinstance check per request cost more than the rest of this step.
        self._anchored = {tee: v for tee, v in self._verifiers.items() if isinstance(v, ReferenceValueAnchored)}
        self._verbose = verbose_token
        self._clock = clock
        self._random = random_bytes
        self._cache = PolicyCache()
        self._engine = engine

    async def load_default_policies(self) -> None:
        """Store the shipped defaults unless a policy with the same id exists (overwrite=False)."""
        for policy_id, text in default_policies().items():
            await self._engine.compile(self._cache.get(text).spec)
            if await self._policies.put(policy_id, text, overwrite=False):
                self.inputs.invalidate()
                logger.info("installed default policy %s", policy_id)

    # --- evaluation -------------------------------------------------------------

    async def evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str]) -> str:
        """The signed EAR for `requests`; every outcome is counted by TEE (`AsMetrics`)."""
        start = time.perf_counter()
        tee = _tee_label(requests[0].tee) if requests else "none"
        try:
            token, results = await self._evaluate(requests, policy_ids)
        except TrusteeError as exc:
            for request in requests or ():
                self.metrics.evaluations.labels(_tee_label(request.tee), "error").inc()
                self.metrics.errors.labels(_tee_label(request.tee), exc.variant).inc()
            raise
        finally:
            self.metrics.latency.labels(tee).observe(time.perf_counter() - start)
        for item_tee, status in results:
            self.metrics.evaluations.labels(item_tee, status).inc()
        return token

    async def _evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
        if not requests:
            raise MalformedRequestError("verification_requests: at least one request is required")
        policy_id = check_policy_id(policy_ids[0]) if policy_ids else DEFAULT_POLICY_ID
        snapshot = await self.inputs.current()  # its epoch was read before any policy or reference value
        now = self._clock()
        for request in requests:
            prepare = getattr(self._verifiers.get(request.tee), "prepare", None)
            if prepare is not None:  # adapters that fetch collateral (DCAP PCS/PCCS) before the pure verifier
                await prepare(request.evidence)
        verifiers = await self._anchored_verifiers(snapshot, {request.tee for request in requests})
        items = [(item, request.tee) for index, request in enumerate(requests) for item in self._annotate(verifiers, index, request, now)]
        counters: dict[str, int] = {}
        submods: dict[str, Any] = {}
        results: list[tuple[str, str]] = []
        for (annotated, tee_class), tee in items:
            name = f"{tee_class}{counters.get(tee_class, 0)}"
            counters[tee_class] = counters.get(tee_class, 0) + 1
            submods[name] = await self._appraise(snapshot, annotated, f"{policy_id}_{tee_class}", policy_id)
            results.append((_tee_label(tee), str(submods[name]["ear.status"])))
            logger.debug("submod %s appraised with %s: %s", name, f"{policy_id}_{tee_class}", submods[name]["ear.status"])
        return self._signer.sign(ear_claims(submods, self._settings, now, epoch=snapshot.epoch)), results

    async def appraisal_epoch(self) -> str:
        """Changes whenever a policy or reference value changes, through any replica or route."""
        return await self.inputs.fresh_epoch()

    async def _anchored_verifiers(self, snapshot: Snapshot, tees: set[str]) -> Mapping[str, Verifier]:
        """The verifiers for this request, those anchored in reference values bound to the RVPS's current ones."""
        anchored = [tee for tee in sorted(tees) if tee in self._anchored]
        if not anchored:
            return self._verifiers
        bound = dict(self._verifiers)
        for tee in anchored:
            verifier = self._anchored[tee]
            wanted = [n for n in verifier.trust_reference_values if storable(n)]
            bound[tee] = verifier.with_reference_values(await self.inputs.reference_values(snapshot, wanted))
        return bound

    def _annotate(
        self, verifiers: Mapping[str, Verifier], index: int, request: VerificationRequest, now: datetime.datetime
    ) -> list[tuple[dict[str, Any], str]]:
        try:
            return annotate(request, verifiers, now, verbose=self._verbose)
        except MalformedRequestError as exc:
            raise MalformedRequestError(f"verification_requests[{index}]: {exc.detail}") from None

    async def _appraise(self, snapshot: Snapshot, annotated: dict[str, Any], policy_name: str, policy_id: str) -> dict[str, Any]:
        compiled = await self._compiled(snapshot, policy_name)
        values = await self.inputs.reference_values(snapshot, compiled.queried_names)
        try:
            result = await self._engine.evaluate(compiled.spec, annotated, compiled.data(values))
        except InternalError as exc:
            raise InvalidPolicyError(f"policy {policy_name}: {exc.detail}") from None
        return appraisal(policy_id, policy_name, annotated, result)

    async def _compiled(self, snapshot: Snapshot, policy_name: str) -> CompiledPolicy:
        text = await self.inputs.policy(snapshot, policy_name)
        if text is None:
            raise PolicyNotFoundError(f"attestation policy {policy_name} not found")
        return self._cache.get(text)

    # --- policies -----------------------------------------------------------------

    async def set_policy(self, policy_id: str, text: str) -> None:
        check_policy_id(policy_id)
        await self._engine.compile(self._cache.get(text).spec)
        try:
            await self._policies.put(policy_id, text)
        finally:
            self.inputs.invalidate()
        self.metrics.policy_changes.labels("set").inc()
        logger.info("attestation policy %s set (sha384 %s)", policy_id, policy_digest(text)[:16])
        if (undecoded := undecoded_warning(text)) is not None:
            logger.warning("attestation policy %s: %s", policy_id, undecoded)

    async def get_policy(self, policy_id: str) -> str:
        text = await self._policies.get(policy_id)
        if text is None:
            raise PolicyNotFoundError(f"attestation policy {policy_id} not found")
        return text

    async def delete_policy(self, policy_id: str) -> None:
        try:
            deleted = await self._policies.delete(policy_id)
        finally:
            self.inputs.invalidate()
        if not deleted:
            raise PolicyNotFoundError(f"attestation policy {policy_id} not found")
        self.metrics.policy_changes.labels("delete").inc()
        logger.info("attestation policy %s deleted", policy_id)

    async def list_policies(self) -> list[tuple[str, str]]:
        """`(policy id, hex sha384 of the text)` for every stored policy."""
        found = []
        for policy_id in await self._policies.ids():
            text = await self._policies.get(policy_id)
            if text is not None:
                found.append((policy_id, policy_digest(text)))
        return found

    # --- keys and challenges ------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        return self._signer.jwks()

    def challenge(self, inner: Mapping[str, str]) -> str:
        if "tee" not in inner:
            raise MalformedRequestError("challenge request: missing 'tee'")
        tee = parse_tee(inner["tee"], "challenge request tee")
        if tee in CHALLENGE_UNSUPPORTED_TEES:
            raise MalformedRequestError(f"attestation challenge for tee {tee} is not supported by this attestation service")
        return std_encode(self._random(NONCE_BYTES))


def _tee_label(tee: str) -> str:
    """A metric label: a TEE name the protocol knows, else `other`."""
    return tee if tee in TEE_CLASSES else "other"

