"""Token providers of the AA: the network side of `GetToken`.

* `KbsTokenProvider` (token type `kbs`): a fresh RCAR handshake with a new
  TEE key pair on every call (no caching, as upstream; a TPM-bound key
  when the attester makes one, docs/tpm-bound-keys.md), returning
  `{"token": "<JWT>", "tee_keypair": "<PEM private key>"}`.
* `CocoAsTokenProvider` (token type `coco_as`): evidence over empty report
  data posted to a RESTful Attestation Service's `/attestation`; the body of
  the 200 reply is the token (guest-components.md 2.5).

Both raise `TrusteeError`s; they never log tokens or keys.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from guest.attestation_agent.agent import compact_json
from guest.attestation_agent.config import CocoAsTokenConfig, KbsTokenConfig
from guest.attesters.base import Attester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from trustee_common.b64 import url_encode
from trustee_common.errors import UpstreamError
from trustee_common.jose import TeeKeyPair

logger = logging.getLogger(__name__)

#: RCAR handshake attempts when the KBS is unreachable, and the pause between them.
TOKEN_ATTEMPTS = 3
RETRY_DELAY = 1.0
HTTP_TIMEOUT = 60.0


class KbsTokenProvider:
    def __init__(self, config: KbsTokenConfig, evidence: AttesterEvidence, init_data_toml: str | None = None) -> None:
        self.config = config
        self.evidence = evidence
        self.init_data_toml = init_data_toml

    async def _attest(self, key_pair: TeeKeyPair) -> str:
        async with KbsClient(
            self.config.url,
            evidence=self.evidence,
            key_pair=key_pair,
            init_data_toml=self.init_data_toml,
            cert_pem=self.config.cert_pem,
            timeout=HTTP_TIMEOUT,
        ) as client:
            return await client.attest()

    async def get_token(self) -> bytes:
        key_pair = self.evidence.new_key_pair(self.config.tee_key_algorithm)
        for attempt in range(1, TOKEN_ATTEMPTS + 1):
            try:
                token = await self._attest(key_pair)
                break
            except UpstreamError as exc:
                if attempt == TOKEN_ATTEMPTS:
                    raise
                logger.warning("RCAR handshake attempt %d/%d failed: %s", attempt, TOKEN_ATTEMPTS, exc.detail)
                await asyncio.sleep(RETRY_DELAY)
        return compact_json({"token": token, "tee_keypair": key_pair.to_pem().decode()})


class CocoAsTokenProvider:
    def __init__(self, config: CocoAsTokenConfig, primary: Attester) -> None:
        self.url = config.url.rstrip("/") + "/attestation"
        self.primary = primary

    def request_body(self) -> dict[str, object]:
        evidence = compact_json(self.primary.get_evidence(b""))
        return {
            "verification_requests": [{"tee": self.primary.tee, "evidence": url_encode(evidence)}],
            "policy_ids": [],
        }

    async def get_token(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, json=self.request_body()) as response,
            ):
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"cannot reach the attestation service at {self.url}: {exc}") from exc
        if response.status != 200:
            text = body[:200].decode(errors="replace")
            raise UpstreamError(f"attestation service answered HTTP {response.status}: {text}")
        return body
