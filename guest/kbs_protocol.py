"""KBS protocol 0.4.0 client (upstream guest-components `kbs_protocol`).

Background-check mode: `attest()` runs the RCAR handshake (`/auth`,
`/attest`) with an evidence provider, keeps the session cookie and the
token, and `get_resource()` uses them, re-attesting on 401. Passport
mode: built with a token and its TEE key pair, it sends
`Authorization: Bearer <token>` instead. A KBS at its in-flight limit
answers 503 `ServerBusy` with `Retry-After`; both modes retry it with
jittered exponential backoff (`guest.backoff`, bounded attempts and time).
So is a connection the KBS closed or reset without answering
(`ConnectionDroppedError`: a KBS at its connection cap closes the oldest
idle one, a worker stopped): nothing of the request was answered, and the
handshake starts again from `/auth`. A KBS that cannot be connected to at
all, or a time-out, still fails at once.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from guest.attesters.base import Attester, TeeKeyCertifier
from guest.backoff import RetryPolicy, parse_retry_after, retry_busy
from trustee_common.bounded import loads_json
from trustee_common.canonical import HashAlgorithm, device_runtime_data, primary_runtime_data, runtime_data_digest
from trustee_common.errors import (
    ERROR_TYPE_PREFIX,
    MalformedRequestError,
    ServerBusyError,
    TrusteeError,
    UpstreamError,
    error_from_variant,
)
from trustee_common.jose import TeeKeyPair
from trustee_common.messages import PROTOCOL_VERSION, Challenge

logger = logging.getLogger(__name__)


class ConnectionDroppedError(ServerBusyError):
    """The KBS closed or reset the connection before answering: retried like a 503 (never sent by a KBS)."""


def unreachable(base: str, exc: aiohttp.ClientError | TimeoutError) -> TrusteeError:
    """The error for a request that got no answer: `ConnectionDroppedError` if the KBS dropped it after connecting."""
    if isinstance(exc, aiohttp.ServerDisconnectedError) or (
            isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)):
        return ConnectionDroppedError(f"the KBS at {base} closed the connection without answering: {exc}")
    return UpstreamError(f"cannot reach the KBS at {base}: {exc}")


SUPPORTED_HASH_ALGORITHMS = ["sha256", "sha384", "sha512"]
RESOURCE_ATTEMPTS = 3
USER_AGENT = "pytrustee-kbs-client/0.1.0"


@dataclass
class AttesterEvidence:
    """Evidence from local attesters: one primary and any device attesters."""

    primary: Attester
    devices: list[Attester] = field(default_factory=list)

    @property
    def tee(self) -> str:
        return self.primary.tee

    def new_key_pair(self, algorithm: str) -> TeeKeyPair:
        """The primary attester's platform-resident TEE key when it makes one (tpm), else a software key."""
        if isinstance(self.primary, TeeKeyCertifier):
            key_pair = self.primary.create_tee_key()
            if key_pair is not None:
                return key_pair
        return TeeKeyPair.generate(algorithm)

    def composite(
        self, nonce: str, tee_pubkey: dict[str, Any], algorithm: HashAlgorithm, key_pair: TeeKeyPair | None = None
    ) -> dict[str, Any]:
        """`tee-evidence` binding `nonce` and `tee_pubkey` (guest-components.md 3.8), certifying `key_pair` when the attester can."""
        device_digest = runtime_data_digest(device_runtime_data(nonce, tee_pubkey), algorithm)
        devices = {d.tee: d.get_evidence(device_digest) for d in self.devices}
        additional = json.dumps(devices, separators=(",", ":")) if devices else ""
        digest = runtime_data_digest(primary_runtime_data(nonce, tee_pubkey, additional), algorithm)
        if isinstance(self.primary, TeeKeyCertifier):
            primary = self.primary.get_evidence_for_key(digest, key_pair)
        else:
            primary = self.primary.get_evidence(digest)
        return {"primary_evidence": primary, "additional_evidence": additional}


def ssl_context(cert_pem: bytes | None) -> ssl.SSLContext | bool:
    """A TLS context trusting `cert_pem` in addition to the system roots (True: defaults)."""
    if cert_pem is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=cert_pem.decode())
    return context


def parse_error_body(text: str) -> tuple[str, str] | None:
    """(variant, detail) of a KBS `{"type", "detail"}` error body; None when it is not one."""
    try:
        body = loads_json(text, "KBS error body")
        return str(body["type"]).removeprefix(ERROR_TYPE_PREFIX), str(body.get("detail", ""))
    except (MalformedRequestError, KeyError, TypeError):
        return None


def busy_error(status: int, headers: Any, parsed: tuple[str, str] | None) -> ServerBusyError | None:
    """The `ServerBusyError` a 503 means: `ServerBusy`, or any 503 with `Retry-After` (e.g. from a proxy); else None."""
    retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
    if status != 503 or (retry_after is None and (parsed is None or parsed[0] != ServerBusyError.variant)):
        return None
    return ServerBusyError(parsed[1] if parsed is not None else "the KBS is busy (HTTP 503)", retry_after=retry_after)


async def error_from_response(response: aiohttp.ClientResponse) -> TrusteeError:
    """Rebuild the KBS error from its `{"type", "detail"}` body (`ServerBusyError` with the `Retry-After` delay)."""
    text = await response.text(errors="replace")
    parsed = parse_error_body(text)
    busy = busy_error(response.status, response.headers, parsed)
    if busy is not None:
        return busy
    if parsed is None:
        return UpstreamError(f"KBS answered HTTP {response.status}: {text[:200]}")
    return error_from_variant(*parsed, forbidden=response.status == 403)


class KbsClient:
    """One client per KBS; use as an async context manager.

    Its cookie jar (the RCAR session) is its own. `connector` lets many
    clients share one connection pool (kept open when a client closes);
    `trace_configs` are aiohttp's request hooks (the benchmark times each request with them).
    """

    def __init__(
        self,
        url: str,
        *,
        evidence: AttesterEvidence | None = None,
        key_pair: TeeKeyPair | None = None,
        token: str | None = None,
        init_data_toml: str | None = None,
        cert_pem: bytes | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        connector: aiohttp.BaseConnector | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        if evidence is None and token is None:
            raise MalformedRequestError("a KBS client needs an evidence provider or a token")
        self.base = url.rstrip("/") + "/kbs/v0"
        self.evidence = evidence
        self.key_pair = key_pair or TeeKeyPair.generate()
        self.token = token
        self.init_data_toml = init_data_toml
        #: How `503 ServerBusy` answers are retried (guest.backoff).
        self.retry = retry or RetryPolicy()
        self._ssl = ssl_context(cert_pem)
        # A caller-owned `connector` (connection pool) outlives this client; the cookie jar is always this client's own.
        self._session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=connector is None,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": USER_AGENT},
            trace_configs=list(trace_configs) or None,
        )

    async def __aenter__(self) -> KbsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            async with self._session.post(f"{self.base}/{path}", json=body, ssl=self._ssl) as response:
                if response.status != 200:
                    raise await error_from_response(response)
                return loads_json(await response.read(), "KBS reply", error=UpstreamError)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(self.base, exc) from exc

    async def attest(self) -> str:
        """Run the RCAR handshake; returns (and keeps) the attestation token.

        A busy KBS (503) at `/auth` or `/attest` makes the whole handshake
        start again after a backoff: a fresh challenge, so a retry never
        depends on a session the KBS may have dropped or consumed.
        """
        return await retry_busy(self._handshake, self.retry, f"attest to {self.base}")

    async def _handshake(self) -> str:
        if self.evidence is None:
            raise MalformedRequestError("passport-mode client cannot attest")
        request = {
            "version": PROTOCOL_VERSION,
            "tee": self.evidence.tee,
            "extra-params": {"supported-hash-algorithms": SUPPORTED_HASH_ALGORITHMS},
        }
        challenge = Challenge.from_json(await self._post_json("auth", request))
        selected = challenge.extra_params.get("selected-hash-algorithm", "") if isinstance(challenge.extra_params, dict) else ""
        algorithm = HashAlgorithm.parse(str(selected))
        tee_pubkey = self.key_pair.public_jwk()
        attestation = {
            "init-data": None if self.init_data_toml is None else {"format": "toml", "body": self.init_data_toml},
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": tee_pubkey},
            "tee-evidence": self.evidence.composite(challenge.nonce, tee_pubkey, algorithm, self.key_pair),
        }
        reply = await self._post_json("attest", attestation)
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise UpstreamError("KBS /attest reply has no token")
        self.token = token
        logger.info("attested to %s as %s", self.base, self.evidence.tee)
        return token

    async def get_resource(self, path: str) -> bytes:
        """GET `/kbs/v0/<path>` (e.g. `resource/default/key/1`) and open the JWE."""
        last: TrusteeError | None = None
        for _ in range(RESOURCE_ATTEMPTS):
            if self.token is None and self.evidence is not None:
                await self.attest()
            result = await retry_busy(lambda: self._get_once(path), self.retry, f"GET {path}")
            if isinstance(result, bytes):
                return result
            last = result
            self.token = None
        assert last is not None
        raise last

    async def _get_once(self, path: str) -> bytes | TrusteeError:
        """The opened resource, or the 401 error that calls for attesting again; other errors are raised."""
        headers = {} if self.evidence is not None else {"Authorization": f"Bearer {self.token}"}
        try:
            async with self._session.get(f"{self.base}/{path}", headers=headers, ssl=self._ssl) as response:
                if response.status == 200:
                    return self.key_pair.decrypt(loads_json(await response.read(), "KBS resource reply", error=UpstreamError))
                error = await error_from_response(response)
                if response.status != 401 or self.evidence is None:
                    raise error
                return error
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(self.base, exc) from exc
