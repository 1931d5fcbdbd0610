"""CDH adapters: the AA as a token source and the KBS in passport mode.

`AaTokenSource` calls the AA's `GetToken("kbs")` over gRPC;
`PassportKbs` sends `Authorization: Bearer <token>` to the KBS with
`guest.kbs_protocol.KbsClient` and opens the JWE with the token's key pair.
Neither caches anything: caching is the hub's job.
"""

from __future__ import annotations

from guest.attestation_agent.client import AaClient
from guest.cdh.hub import Credential, parse_token_reply
from guest.kbs_protocol import KbsClient

KBS_TIMEOUT = 60.0


class AaTokenSource:
    def __init__(self, client: AaClient) -> None:
        self.client = client

    async def fetch_credential(self) -> Credential:
        return parse_token_reply(await self.client.get_token("kbs"))


class PassportKbs:
    def __init__(self, url: str, cert_pem: bytes | None = None) -> None:
        self.url = url
        self.cert_pem = cert_pem

    async def get(self, kbs_path: str, credential: Credential) -> bytes:
        async with KbsClient(
            self.url, token=credential.token, key_pair=credential.key_pair, cert_pem=self.cert_pem, timeout=KBS_TIMEOUT
        ) as client:
            return await client.get_resource(kbs_path)
