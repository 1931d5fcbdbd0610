"""The resource plugin and the resource policy: release, admin writes, policy management.

Release order (trustee-server.md 2.1): verify the token (for a cookie
session: only the time claims of the claims the KBS verified at `/attest`,
`kbs.protocol`; a bearer token in full), find its TEE key,
refuse it if it predates the AS's current appraisal epoch
(`kbs.freshness`), evaluate the resource policy, and only then look the
resource up, so a client the policy denies cannot learn which resources
exist. The policy
text is read from the key-value store (namespace `kbs`, key
`resource-policy.rego`) on every request. This module knows no HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kbs.audit import KbsAudit
from kbs.core.audit_events import ear_summary, release_event
from kbs.core.resource_path_form import LIST, PathForm, path_form
from kbs.core.resource_policy import POLICY_KEY, POLICY_NAMESPACE, allows, policy_data, policy_input, resource_policy_spec
from kbs.core.token import AttestationTokenVerifier
from kbs.freshness import AppraisalEpochGuard
from kbs.metrics import KbsMetrics
from trustee_common.b64 import url_decode_text, url_encode
from trustee_common.errors import (
    InternalError,
    MalformedRequestError,
    PolicyDenyError,
    PolicyEngineUnavailableError,
    PolicyNotFoundError,
    ResourceNotFoundError,
    TokenNotFoundError,
    TrusteeError,
)
from trustee_common.jose import TeePubKey
from trustee_common.rego import PolicySpec
from trustee_common.rego_escapes import undecoded_warning
from trustee_common.rego_pool import RegoPool
from trustee_common.storage import KeyValueStore, ResourceStore
from trustee_common.storage.directory import parse_resource_path

logger = logging.getLogger(__name__)

RESOURCE_PLUGIN = "resource"

#: SHA-256 of the resource policies this project shipped as its default before issue 9 (the KBS
#: built-in and kbs-client's `--default`): they release to contraindicated appraisals. A stored
#: policy byte-equal to one of them was never changed by an admin, so the current default replaces it.
SUPERSEDED_DEFAULT_SHA256 = frozenset({
    "49c5a87eb58b8f03dbd04ee0f90ebc7ddbf42f96c4a649908f4b55fce1b1d53e",
    "9a8cd1d38c01d5914889041bf136d78fdbddadbe4bc06cf1e6e24f091edf4ade",
})


class PolicyStore:
    """The resource policy text in shared storage, compiled (in a policy worker) before it is accepted."""

    def __init__(self, store: KeyValueStore, engine: RegoPool) -> None:
        self._store = store
        self.engine = engine
        self._last: PolicySpec | None = None
        self.text_sha256 = ""
        #: The form of `data["resource-path"]` the last policy text uses.
        self.path_form = path_form("")

    def spec(self, text: str) -> PolicySpec:
        """The spec of `text`, reusing the last one (its digests, its path form) while the policy is unchanged."""
        last = self._last
        if last is None or last.text != text:
            last = resource_policy_spec(text)
            self._remember(last, path_form(text))
        return last

    def _remember(self, spec: PolicySpec, form: PathForm) -> None:
        self._last = spec
        self.text_sha256 = hashlib.sha256(spec.text.encode()).hexdigest()
        self.path_form = form

    async def install_default(self, text: str) -> None:
        """Store the built-in policy unless one is stored; an unchanged superseded default is upgraded."""
        await self.engine.compile(resource_policy_spec(text))
        if await self._store.put(POLICY_NAMESPACE, POLICY_KEY, text.encode(), overwrite=False):
            logger.info("installed the built-in resource policy")
            return
        stored = await self._store.get(POLICY_NAMESPACE, POLICY_KEY)
        if stored is not None and hashlib.sha256(stored).hexdigest() in SUPERSEDED_DEFAULT_SHA256:
            await self._store.put(POLICY_NAMESPACE, POLICY_KEY, text.encode(), overwrite=True)
            logger.warning("replaced the stored resource policy, an earlier built-in default that released to "
                           "contraindicated appraisals, with the current built-in default")

    async def current(self) -> str:
        raw = await self._store.get(POLICY_NAMESPACE, POLICY_KEY)
        if raw is None:
            raise PolicyNotFoundError("no resource policy is set")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InternalError("stored resource policy is not UTF-8") from None

    async def current_json(self) -> dict[str, str]:
        """`{"policy": base64url-no-pad of the text}`, the shape the POST takes."""
        return {"policy": url_encode((await self.current()).encode())}

    async def set_from_json(self, body: object) -> None:
        """Accept `{"policy": base64url-no-pad}` only if it compiles; the old one stays otherwise."""
        if not isinstance(body, dict) or set(body) != {"policy"} or not isinstance(body["policy"], str):
            raise MalformedRequestError('resource policy body must be {"policy": "<base64url without padding>"}')
        text = url_decode_text(body["policy"], "policy")
        spec = resource_policy_spec(text)
        await self.engine.compile(spec)
        await self._store.put(POLICY_NAMESPACE, POLICY_KEY, text.encode())
        form, undecoded = await asyncio.to_thread(lambda: (path_form(text), undecoded_warning(text)))  # a big text: not on the loop
        self._remember(spec, form)  # this worker's next request reads the text it just stored: no second reading
        logger.info("resource policy replaced (%d bytes); %s", len(text), describe(form))
        if form.mixed:
            logger.warning("the resource policy uses data[\"resource-path\"] both as a list and as a string; "
                           "it is given the list, so its string uses will not match")
        if undecoded is not None:
            logger.warning("resource policy: %s", undecoded)


def describe(form: PathForm) -> str:
    """The upload log's account of the form of `data["resource-path"]`."""
    shape = 'a list of segments ["<repo>", "<type>", "<tag>"]' if form.form == LIST else 'the string "<repo>/<type>/<tag>"'
    return f'data["resource-path"] is {shape}: {form.reason}'


class AccessGate:
    """What a token-gated request passes before anything is read: the token, its appraisal epoch, the resource policy.

    Shared by the resource plugin and every other plugin's token-gated
    requests (`kbs.http.plugin_handlers`); `data.plugin` is the plugin name.
    """

    def __init__(
        self,
        policies: PolicyStore,
        verifier: AttestationTokenVerifier,
        freshness: AppraisalEpochGuard,
        metrics: KbsMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policies = policies
        self.verifier = verifier
        self._freshness = freshness
        self._metrics = metrics
        self._clock = clock

    async def admit(
        self,
        token: str | None,
        verified: dict[str, Any] | None,
        plugin: str,
        path: str,
        query: dict[str, str],
        facts: dict[str, Any],
        *,
        key_first: bool = False,
    ) -> tuple[dict[str, Any], TeePubKey | None]:
        """The verified claims (and, with `key_first`, the TEE key, found before the policy runs), or the refusal.

        `verified`: the claims of `token` as the KBS verified them at `/attest`
        (from its own session store, never from the client): only their times
        are checked again, and the appraisal epoch as for any token.
        """
        received = self._freshness.now()
        if verified is not None:
            self.verifier.check_times(verified, self._clock())
            claims = verified
        elif token is None:
            raise TokenNotFoundError("Attestation Token not found")
        else:
            claims = await self.verifier.verify_fresh(token, self._clock())
        facts.update(ear_summary(claims))
        tee_key = self.verifier.tee_pubkey(claims) if key_first else None
        await self._freshness.check(claims, received)
        await self._enforce(claims, plugin, path, query, facts)
        return claims, tee_key

    async def _enforce(self, claims: dict[str, Any], plugin: str, path: str, query: dict[str, str], facts: dict[str, Any]) -> None:
        self._metrics.policy_evaluations.inc()
        try:
            text = await self._policies.current()
            spec = self._policies.spec(text)
            facts["policy"] = {"id": POLICY_KEY, "sha256": self._policies.text_sha256}
            data = policy_data(plugin, path, query, self._policies.path_form)
            allowed = allows(await self._policies.engine.evaluate(spec, policy_input(claims, text), data))
        except PolicyEngineUnavailableError:
            self._metrics.policy_errors.inc()
            raise
        except TrusteeError as exc:
            self._metrics.policy_errors.inc()
            logger.warning("resource policy evaluation failed, denying: %s", exc.detail)
            allowed = False
        if not allowed:
            self._metrics.policy_violations.inc()
            raise PolicyDenyError("Access denied by policy")
        self._metrics.policy_approvals.inc()


class ResourceService:
    def __init__(
        self,
        repository: ResourceStore,
        policies: PolicyStore,
        verifier: AttestationTokenVerifier,
        freshness: AppraisalEpochGuard,
        metrics: KbsMetrics,
        *,
        audit: KbsAudit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self.gate = AccessGate(policies, verifier, freshness, metrics, clock=clock)
        self._metrics = metrics
        self._audit = audit or KbsAudit()

    async def release(
        self,
        token: str | None,
        path: str,
        query: dict[str, str],
        origin: Mapping[str, Any] | None = None,
        *,
        verified: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """The resource at `path` as a JWE to the token's TEE key; every outcome is audited.

        `verified`: as for `AccessGate.admit`. A release is audited before the
        envelope is returned and fails closed (`StorageError`, no envelope)
        when the audit log cannot be written.
        """
        facts: dict[str, Any] = {"resource": path}
        try:
            envelope = await self._release(token, path, query, facts, verified)
        except TrusteeError as exc:
            self._audit.best_effort(release_event("denied", origin or {}, facts, exc))
            raise
        self._audit.must(release_event("released", origin or {}, facts))
        self._metrics.resource_reads.inc()
        return envelope

    async def _release(
        self, token: str | None, path: str, query: dict[str, str], facts: dict[str, Any], verified: dict[str, Any] | None
    ) -> dict[str, str]:
        parse_resource_path(path)
        _claims, tee_key = await self.gate.admit(token, verified, RESOURCE_PLUGIN, path, query, facts, key_first=True)
        assert tee_key is not None
        data = await self._repository.read(path)
        if data is None:
            raise ResourceNotFoundError(f"resource {path} not found")
        return tee_key.encrypt(data)

    async def write(self, path: str, data: bytes) -> None:
        parse_resource_path(path)
        await self._repository.write(path, data)
        self._metrics.resource_writes.inc()
        logger.info("resource %s written (%d bytes)", path, len(data))

    async def delete(self, path: str) -> None:
        parse_resource_path(path)
        if not await self._repository.delete(path):
            raise ResourceNotFoundError(f"resource {path} not found")
        self._metrics.resource_deletes.inc()
        logger.info("resource %s deleted", path)
