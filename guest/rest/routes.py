"""Pure rules of the REST API server: features, peer check, inputs, error statuses.

No aiohttp here: the handlers in `guest.rest.app` call these functions.

Error statuses (the server's one table, `status_for`):

| error | status | meaning |
|---|---|---|
| `MalformedRequestError` | 400 | bad query, path or body (or a malformed sealed secret) |
| `PayloadTooLargeError` | 413 | a sealed secret over the size limit |
| `ResourceNotFoundError`, `PluginNotFoundError` | 404 | the KBS has no such resource |
| `PolicyDenyError`, `AttestationError`, `TokenVerifierError`, `TokenNotFoundError` | 403 | the KBS refused this guest |
| `SecretVerificationError` (a `TokenVerifierError`) | 403 | a sealed secret is unsigned or badly signed |
| `ServiceUnreachableError` | 503 | the AA or the CDH does not answer |
| `ConfigError` | 503 | the AA or the CDH lacks the configuration for this request (e.g. no KBS, no sealed-secret key) |
| `UpstreamError` | 502 | the KBS (or AS) is unreachable or failed |
| anything else | 500 | `internal error` (details only in the log) |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from guest.attestation_agent.serving import ServiceUnreachableError
from guest.resource_uri import ResourceUri
from trustee_common import errors as e
from trustee_common.b64 import url_decode

FEATURES = ("resource", "attestation", "all")

FORBIDDEN_BODY = "Forbidden"
NOT_FOUND_BODY = "URL NOT FOUND"
ATTESTATION_DISABLED_BODY = "Attestation Feature Not Enabled"
RESOURCE_DISABLED_BODY = "Resource Feature Not Enabled"
INTERNAL_BODY = "internal error"

_STATUS: list[tuple[type[e.TrusteeError], int]] = [
    (e.MalformedRequestError, 400),
    (e.PayloadTooLargeError, 413),
    (e.ResourceNotFoundError, 404),
    (e.PluginNotFoundError, 404),
    (e.PolicyDenyError, 403),
    (e.AttestationError, 403),
    (e.TokenVerifierError, 403),
    (e.TokenNotFoundError, 403),
    (ServiceUnreachableError, 503),
    (e.ConfigError, 503),
    (e.UpstreamError, 502),
]


@dataclass(frozen=True)
class Features:
    name: str
    resource: bool
    attestation: bool

    @classmethod
    def parse(cls, name: str) -> Features:
        if name not in FEATURES:
            raise e.ConfigError(f"--features: {name!r} is not one of {', '.join(FEATURES)}")
        return cls(name, name in ("resource", "all"), name in ("attestation", "all"))


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else or unknown."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def resource_uri(raw_tail: str) -> str:
    """`<repo>/<type>/<tag>` (raw, still percent-encoded) -> `kbs:///<repo>/<type>/<tag>`."""
    uri = f"kbs:///{raw_tail}"
    ResourceUri.parse(uri)
    return uri


def runtime_data(value: str | None, encoding: str | None) -> bytes:
    """The `runtime_data` query value as bytes: UTF-8, or base64url without padding."""
    if value is None:
        raise e.MalformedRequestError("missing query parameter runtime_data")
    if encoding is None:
        return value.encode()
    if encoding != "base64":
        raise e.MalformedRequestError(f"unsupported encoding {encoding!r} (only base64)")
    return url_decode(value, "runtime_data")


def token_type(value: str | None) -> str:
    if not value:
        raise e.MalformedRequestError("missing query parameter token_type")
    return value


def status_for(error: e.TrusteeError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def aael_event(body: object) -> tuple[str, str, str]:
    """`{"domain", "operation", "content"}` of `POST /aa/aael`."""
    if not isinstance(body, dict):
        raise e.MalformedRequestError("body must be a JSON object with domain, operation and content")
    values = [body.get(key) for key in ("domain", "operation", "content")]
    if not all(isinstance(v, str) for v in values):
        raise e.MalformedRequestError("domain, operation and content must be strings")
    domain, operation, content = (str(v) for v in values)
    return domain, operation, content


def sealed_secret(body: bytes) -> bytes:
    """The body of `POST /cdh/secret`: the `sealed.` string, surrounding whitespace removed."""
    secret = body.strip()
    if not secret:
        raise e.MalformedRequestError("body must be a sealed secret (sealed.<header>.<payload>.<signature>)")
    return secret
