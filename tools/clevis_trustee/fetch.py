"""Fetch the key from the local Confidential Data Hub: guest REST API or CDH gRPC.

The CDH attests this machine to the KBS (through the Attestation Agent)
and returns the resource only when the KBS's resource policy allows it.
Every failure becomes one `PinError` line saying which side refused.
"""

from __future__ import annotations

import aiohttp

from clevis_trustee.config import CdhEndpoint
from clevis_trustee.jwe import PinError
from guest.attestation_agent.serving import ServiceUnreachableError
from guest.cdh.client import CdhClient
from trustee_common import errors as e

REQUEST_TIMEOUT_SECONDS = 120.0
#: A key resource is a small JWK; anything larger is not one.
MAX_RESOURCE_BYTES = 64 * 1024
_DENIED = (e.PolicyDenyError, e.AttestationError, e.TokenVerifierError, e.TokenNotFoundError)
_NOT_FOUND = (e.ResourceNotFoundError, e.PluginNotFoundError)


async def fetch_key_resource(endpoint: CdhEndpoint, path: str) -> bytes:
    if endpoint.rest is not None:
        return await _rest(endpoint.rest, path, endpoint.describe())
    assert endpoint.grpc is not None
    return await _grpc(endpoint.grpc, path, endpoint.describe())


async def _rest(base: str, path: str, where: str) -> bytes:
    url = f"{base}/cdh/resource/{path}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)) as session, \
                session.get(url) as response:
            body = await response.content.read(MAX_RESOURCE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PinError(f"cannot reach {where} ({str(exc) or type(exc).__name__}): is the guest stack "
                       "(attestation-agent, confidential-data-hub, api-server-rest) running?") from None
    if response.status == 200:
        return _bounded(body, path)
    reason = body[:300].decode("utf-8", errors="replace").strip() or f"HTTP {response.status}"
    if response.status == 403:
        raise PinError(f"the KBS refused to release {path} to this machine (attestation or resource policy): {reason}")
    if response.status == 404:
        raise PinError(f"the KBS has no resource {path} (or {where} has the resource feature off): {reason}")
    raise PinError(f"{where} could not get {path} (HTTP {response.status}): {reason}")


async def _grpc(target: str, path: str, where: str) -> bytes:
    client = CdhClient(target, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        return _bounded(await client.get_resource(f"kbs:///{path}"), path)
    except ServiceUnreachableError:
        raise PinError(f"cannot reach {where}: is confidential-data-hub running?") from None
    except _DENIED as exc:
        raise PinError(f"the KBS refused to release {path} to this machine (attestation or resource policy): {exc.detail}") from None
    except _NOT_FOUND as exc:
        raise PinError(f"the KBS has no resource {path}: {exc.detail}") from None
    except e.TrusteeError as exc:
        raise PinError(f"{where} could not get {path}: {exc.variant}: {exc.detail}") from None
    finally:
        await client.close()


def _bounded(body: bytes, path: str) -> bytes:
    if len(body) > MAX_RESOURCE_BYTES:
        raise PinError(f"the KBS resource {path} is larger than a key ({MAX_RESOURCE_BYTES} bytes)")
    return body
