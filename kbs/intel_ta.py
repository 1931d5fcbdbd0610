"""`AttestationServicePort` over Intel Trust Authority (`[attestation_service] type = "intel_ta"`).

The HTTP side of `kbs.core.ita`: `evaluate` POSTs the attest body to
`<base_url>/appraisal/v2/attest` (or `v1`, per `api_version`) with the `x-api-key` header, verifies the
JWT ITA answers against ITA's JWK set (`certs_file`, kept in
`jwks.ring`, refreshed once for an unknown `kid` within the bound of
`kbs.jwks`), checks the matched/unmatched policies, and returns the token.
The KBS then verifies the token once more with its own verifier, which
trusts the same ring, and keeps the claims (with the EAR-shaped view,
`kbs.core.ita_claims`) in the session.

ITA has no attestation-policy or reference-value API the KBS could
forward to (policies live in the ITA portal and are named by
`policy_ids`), so those admin endpoints answer 400 saying so. ITA tokens
carry no appraisal epoch; `appraisal_epoch` is a constant.

The API key is sent only in the header and never logged or put in an
error message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from kbs.config import IntelTaConfig
from kbs.core.evidence import EvidenceItem
from kbs.core.ita import ATTEST_PATHS, ITA, attest_request, challenge_extra_params, check_policies, error_for_status
from kbs.core.jws import strict_json_loads
from kbs.core.token import AttestationTokenVerifier, TokenTrust
from kbs.jwks import JwkSetSource
from trustee_common.errors import InvalidPolicyError, InvalidReferenceValueError, TokenVerifierError, UpstreamError

logger = logging.getLogger(__name__)

USER_AGENT = "Confidential-containers-trustee pytrustee-kbs"
MAX_RESPONSE_BYTES = 256 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
_NO_POLICY_API = (f"attestation policies are managed in {ITA} (named by attestation_service.policy_ids), "
                  "not through this KBS")


class IntelTrustAuthority:
    """Create inside the running event loop; `start()` loads the JWK set before the KBS serves."""

    def __init__(self, config: IntelTaConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._url = config.base_url.rstrip("/") + ATTEST_PATHS[config.api_version]
        self._clock = clock
        self.jwks = JwkSetSource((config.certs_file,), "attestation_service.certs_file",
                                 min_refresh_seconds=config.jwks_refresh_interval_seconds)
        self._verifier = AttestationTokenVerifier(TokenTrust((), jwk_sets=(self.jwks.ring,)))
        timeout = aiohttp.ClientTimeout(total=config.request_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT})

    async def start(self) -> None:
        await self.jwks.load()
        logger.info("attestation service: %s at %s (api %s, policy_ids %s, allow_unmatched_policy %s)", ITA,
                    self._config.base_url, self._config.api_version, list(self._config.policy_ids), self._config.allow_unmatched_policy)

    @staticmethod
    def challenge_params(tee: str, extra_params: Any) -> Any:
        return challenge_extra_params(tee, extra_params)

    async def evaluate(self, items: list[EvidenceItem], policy_ids: list[str]) -> str:
        """ITA's token for the evidence (the KBS's own policy ids do not apply: ITA's come from the config)."""
        del policy_ids
        allow = self._config.allow_unmatched_policy
        body = attest_request(items, self._config.policy_ids, allow, self._config.api_version)
        token = await self._post(body)
        if self._verifier.unknown_kid(token) is not None:
            await self.jwks.refresh()
        try:
            claims = self._verifier.verify_detailed(token, self._clock())
        except TokenVerifierError as exc:
            raise UpstreamError(f"{ITA} returned a token that does not verify: {exc.detail}") from None
        check_policies(claims, allow)
        return token

    async def _post(self, body: dict[str, Any]) -> str:
        headers = {"x-api-key": self._config.api_key, "Accept": "application/json"}
        logger.info("POST %s", self._url)
        try:
            async with self._session.post(self._url, json=body, headers=headers) as response:
                data = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{ITA} at {self._config.base_url} is unreachable: {type(exc).__name__}") from None
        if len(data) > MAX_RESPONSE_BYTES:
            raise UpstreamError(f"{ITA} answered more than {MAX_RESPONSE_BYTES} bytes")
        if status != 200:
            error = error_for_status(status, data)
            logger.warning("%s: %s", ITA, error.detail)
            raise error
        try:
            reply = strict_json_loads(data)
        except (ValueError, RecursionError):
            reply = None
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError(f'{ITA} answered without a "token"')
        return token

    async def set_policy(self, policy_id: str, policy_b64url: str) -> None:
        raise InvalidPolicyError(_NO_POLICY_API)

    async def register_reference_value(self, message: str) -> None:
        raise InvalidReferenceValueError(f"reference values are managed in {ITA}, not through this KBS")

    async def query_reference_value(self, reference_value_id: str) -> str | None:
        raise InvalidReferenceValueError(f"reference values are managed in {ITA}, not through this KBS")

    async def appraisal_epoch(self) -> str:
        return ""

    async def close(self) -> None:
        await self._session.close()
