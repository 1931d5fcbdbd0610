"""HTTP adapter for the KBS admin endpoints (trustee-server.md 2.2, 2.6-2.8).

`AdminClient` sends one request per call with an optional
`Authorization: Bearer <admin token>` and turns every non-200 answer into
the `TrusteeError` named by the KBS error body. It does not decide where
the token comes from (`kbs_client.auth`) and prints nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from guest.backoff import RetryPolicy, retry_busy
from guest.kbs_protocol import USER_AGENT, busy_error, parse_error_body, ssl_context
from trustee_common.b64 import std_encode, url_decode, url_encode
from trustee_common.errors import TrusteeError, UpstreamError

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 30.0
RV_MESSAGE_VERSION = "0.1.0"


class KbsRefusedError(TrusteeError):
    """The KBS answered with an error body; `kbs_variant` is the suffix of its `type`, whatever it is."""

    variant = "KbsError"

    def __init__(self, kbs_variant: str, detail: str, status: int) -> None:
        super().__init__(detail)
        self.kbs_variant = kbs_variant
        self.status = status


async def kbs_error(response: aiohttp.ClientResponse) -> TrusteeError:
    """The error a non-200 answer carries, keeping the KBS's own variant name (upstream KBSs have more).

    A busy KBS (503 `ServerBusy`, or 503 with `Retry-After`) is a `ServerBusyError`, which is retried.
    """
    text = await response.text(errors="replace")
    parsed = parse_error_body(text)
    busy = busy_error(response.status, response.headers, parsed)
    if busy is not None:
        return busy
    if parsed is None:
        return UpstreamError(f"KBS answered HTTP {response.status}: {text[:200]}")
    return KbsRefusedError(*parsed, response.status)


class AdminClient:
    """Admin calls against `<url>/kbs/v0`; use as an async context manager."""

    def __init__(self, url: str, *, token: str | None = None, cert_pem: bytes | None = None, retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self.base = url.rstrip("/") + "/kbs/v0"
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._ssl = ssl_context(cert_pem)
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, *, data: bytes | None = None, content_type: str | None = None) -> bytes:
        """One admin call; a busy KBS refused it before doing anything, so it is sent again after a backoff."""
        return await retry_busy(lambda: self._request_once(method, path, data, content_type), self.retry, f"{method} {path}")

    async def _request_once(self, method: str, path: str, data: bytes | None, content_type: str | None) -> bytes:
        headers = {"Content-Type": content_type} if content_type else {}
        url = f"{self.base}/{path}"
        logger.debug("%s %s", method, url)
        try:
            async with self._session.request(method, url, data=data, headers=headers, ssl=self._ssl) as response:
                if response.status != 200:
                    raise await kbs_error(response)
                return await response.read()
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach the KBS at {self.base}: {exc}") from exc

    async def _post_json(self, path: str, body: dict[str, Any]) -> None:
        await self._request("POST", path, data=json.dumps(body).encode(), content_type="application/json")

    async def set_resource(self, path: str, content: bytes) -> None:
        await self._request("POST", f"resource/{path}", data=content, content_type="application/octet-stream")

    async def delete_resource(self, path: str) -> None:
        await self._request("DELETE", f"resource/{path}")

    async def get_resource_policy(self) -> str:
        """The resource policy text; upstream KBSs answer a list of policy ids instead, returned as JSON text."""
        body = _json(await self._request("GET", "resource-policy"), "resource-policy")
        if isinstance(body, dict) and isinstance(body.get("policy"), str):
            return url_decode(body["policy"], "policy").decode("utf-8", errors="replace")
        return json.dumps(body)

    async def set_resource_policy(self, policy: str) -> None:
        await self._post_json("resource-policy", {"policy": url_encode(policy.encode())})

    async def set_attestation_policy(self, policy: str, policy_type: str, policy_id: str) -> None:
        await self._post_json("attestation-policy", {"type": policy_type, "policy_id": policy_id, "policy": url_encode(policy.encode())})

    async def register_sample_reference_value(self, name: str, value: Any) -> None:
        payload = json.dumps({name: value}).encode()
        await self._post_json("reference-value", {"version": RV_MESSAGE_VERSION, "type": "sample", "payload": std_encode(payload)})

    async def get_reference_value(self, rv_id: str) -> Any:
        return _json(await self._request("GET", f"reference-value/{quote(rv_id, safe='/')}"), "reference-value")

    async def get_attestation_reports(self, query: dict[str, str]) -> Any:
        """`{"reports": [JWS, ...], "next_cursor"?}` for `instance_id`/`since`/`limit`/`cursor` (docs/attestation-reports.md)."""
        return _json(await self._request("GET", f"attestation-reports?{urlencode(query)}"), "attestation-reports")


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise UpstreamError(f"KBS answered {what} with a body that is not JSON") from None
