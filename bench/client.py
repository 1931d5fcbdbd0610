"""Client side of the sample-TEE flow, shared by the benchmark and tests/scaleout.

`SplitKbsClient` is the real guest `KbsClient` whose `/auth` goes to one
KBS and everything else to another (same cookie jar: the session lives in
the shared store, not in a replica). `admin` opens the real admin client.
"""

from __future__ import annotations

from typing import Any

from kbs_client.admin import AdminClient
from kbs_client.policies import ALLOW_ALL, DENY_ALL

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from trustee_common.jose import TeeKeyPair

__all__ = ["ALLOW_ALL", "DENY_ALL", "SplitKbsClient", "admin", "sample_client", "sample_evidence"]


def sample_evidence() -> AttesterEvidence:
    return AttesterEvidence(SampleAttester())


class SplitKbsClient(KbsClient):
    """A background-check client sending `/auth` to `auth_url` and the rest to `url`."""

    def __init__(self, auth_url: str, url: str, *, key_pair: TeeKeyPair | None = None, timeout: float = 60.0) -> None:
        super().__init__(url, evidence=sample_evidence(), key_pair=key_pair, timeout=timeout)
        self._auth_base = auth_url.rstrip("/") + "/kbs/v0"

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        if path != "auth":
            return await super()._post_json(path, body)
        base, self.base = self.base, self._auth_base
        try:
            return await super()._post_json(path, body)
        finally:
            self.base = base


def sample_client(url: str, *, timeout: float = 60.0) -> KbsClient:
    return KbsClient(url, evidence=sample_evidence(), timeout=timeout)


def admin(url: str, token: str) -> AdminClient:
    return AdminClient(url, token=token)
