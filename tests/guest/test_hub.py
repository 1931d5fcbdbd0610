"""The CDH core (`guest.cdh.hub`) with in-memory token source and KBS.

The ports are simple in-memory implementations of the hub's Protocols, as
the style guide's simulators: they count calls and answer from a script.
Time is the explicit `clock`. The real AA and KBS are in test_e2e.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from guest.cdh.hub import EXPIRY_MARGIN, Credential, ResourceHub, parse_token_reply, token_expiry
from trustee_common.b64 import url_encode
from trustee_common.errors import (
    ConfigError,
    MalformedRequestError,
    PolicyDenyError,
    ResourceNotFoundError,
    TokenVerifierError,
    TrusteeError,
    UpstreamError,
    error_from_variant,
)
from trustee_common.jose import TeeKeyPair

KEY = TeeKeyPair.generate()


def jwt(claims: dict[str, object]) -> str:
    return ".".join([url_encode(b'{"alg":"ES256"}'), url_encode(json.dumps(claims).encode()), "sig"])


class Tokens:
    """Issues `token-1`, `token-2`, ... expiring at `exp`."""

    def __init__(self, exp: float | None = None, delay: float = 0.0) -> None:
        self.issued = 0
        self.exp = exp
        self.delay = delay

    async def fetch_credential(self) -> Credential:
        self.issued += 1
        await asyncio.sleep(self.delay)
        return Credential(f"token-{self.issued}", KEY, self.exp)


class Kbs:
    """Answers each GET from `script` (an error to raise, or None for the resource)."""

    def __init__(self, *script: TrusteeError | None) -> None:
        self.script = list(script)
        self.seen: list[tuple[str, str]] = []

    async def get(self, kbs_path: str, credential: Credential) -> bytes:
        self.seen.append((kbs_path, credential.token))
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return b"resource:" + kbs_path.encode()


async def test_token_is_cached_across_calls() -> None:
    tokens, kbs = Tokens(), Kbs()
    hub = ResourceHub(tokens, kbs, clock=lambda: 1000.0)
    assert await hub.get_resource("kbs:///a/b/c") == b"resource:resource/a/b/c"
    assert await hub.get_resource("kbs+plugin:///x/y?q=1") == b"resource:plugin/x/y?q=1"
    assert tokens.issued == 1
    assert [token for _, token in kbs.seen] == ["token-1", "token-1"]


async def test_token_near_expiry_is_replaced() -> None:
    now = [1000.0]
    tokens = Tokens(exp=1100.0)
    hub = ResourceHub(tokens, Kbs(), clock=lambda: now[0])
    await hub.get_resource("kbs:///a/b/c")
    now[0] = 1100.0 - EXPIRY_MARGIN - 1
    await hub.get_resource("kbs:///a/b/c")
    assert tokens.issued == 1
    now[0] = 1100.0 - EXPIRY_MARGIN
    await hub.get_resource("kbs:///a/b/c")
    assert tokens.issued == 2


@pytest.mark.parametrize(
    "error",
    [TokenVerifierError("expired"), PolicyDenyError("Access denied by policy"), error_from_variant("StaleAttestation", "attest again")],
)
async def test_rejected_cached_token_is_replaced_once(error: TrusteeError) -> None:
    tokens = Tokens()
    kbs = Kbs(None, error)
    hub = ResourceHub(tokens, kbs)
    await hub.get_resource("kbs:///a/b/c")
    assert await hub.get_resource("kbs:///a/b/c") == b"resource:resource/a/b/c"
    assert tokens.issued == 2
    assert [token for _, token in kbs.seen] == ["token-1", "token-1", "token-2"]


async def test_rejected_fresh_token_is_final() -> None:
    tokens = Tokens()
    hub = ResourceHub(tokens, Kbs(PolicyDenyError("Access denied by policy")))
    with pytest.raises(PolicyDenyError):
        await hub.get_resource("kbs:///a/b/c")
    assert tokens.issued == 1


async def test_denied_again_after_refresh_stops_at_two_requests() -> None:
    tokens = Tokens()
    kbs = Kbs(None, PolicyDenyError("deny"), PolicyDenyError("deny"))
    hub = ResourceHub(tokens, kbs)
    await hub.get_resource("kbs:///a/b/c")
    with pytest.raises(PolicyDenyError):
        await hub.get_resource("kbs:///a/b/c")
    assert tokens.issued == 2 and len(kbs.seen) == 3


@pytest.mark.parametrize("error", [ResourceNotFoundError("missing"), UpstreamError("KBS down")])
async def test_other_errors_do_not_refresh(error: TrusteeError) -> None:
    tokens = Tokens()
    hub = ResourceHub(tokens, Kbs(None, error))
    await hub.get_resource("kbs:///a/b/c")
    with pytest.raises(type(error)):
        await hub.get_resource("kbs:///a/b/c")
    assert tokens.issued == 1


async def test_concurrent_callers_share_one_attestation() -> None:
    tokens = Tokens(delay=0.05)
    hub = ResourceHub(tokens, Kbs())
    results = await asyncio.gather(*(hub.get_resource(f"kbs:///a/b/{i}") for i in range(5)))
    assert len(results) == 5 and tokens.issued == 1


async def test_bad_uri_and_missing_kbs() -> None:
    tokens = Tokens()
    with pytest.raises(MalformedRequestError):
        await ResourceHub(tokens, Kbs()).get_resource("https://kbs/a/b/c")
    with pytest.raises(ConfigError, match="no KBS configured"):
        await ResourceHub(tokens, None).get_resource("kbs:///a/b/c")
    assert tokens.issued == 0


def test_token_expiry_reads_exp_without_verifying() -> None:
    assert token_expiry(jwt({"exp": 1234})) == 1234.0
    assert token_expiry(jwt({"exp": 12.5})) == 12.5
    assert token_expiry(jwt({"exp": True})) is None
    assert token_expiry(jwt({"iat": 1})) is None
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.%%%.c") is None
    assert token_expiry("a." + url_encode(b"[1]") + ".c") is None


def test_parse_token_reply() -> None:
    token = jwt({"exp": 99})
    reply = json.dumps({"token": token, "tee_keypair": KEY.to_pem().decode()}).encode()
    credential = parse_token_reply(reply)
    assert credential.token == token and credential.expires_at == 99.0
    assert credential.key_pair.public_jwk() == KEY.public_jwk()
    for bad in (b"", b"[]", b'{"token": "t"}', b'{"token": 1, "tee_keypair": "x"}', b'{"token": "t", "tee_keypair": "x"}'):
        with pytest.raises(UpstreamError):
            parse_token_reply(bad)
