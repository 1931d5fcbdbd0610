"""`api_version = "v1"` (ours): the real KBS calls the stand-in ITA's `/appraisal/v1/attest`.

The v1 body carries the v2 body's fields flat (`quote`, `runtime_data`,
`policy_ids`, `policy_must_match`, ...); ITA answers a v1 token whose
`tdx_*` and `attester_*` claims are flat, and the KBS releases through it
with the same verification and claims view as for v2. As in
test_intel_ta.py, the stand-in does not enforce the REPORTDATA binding for
the corpus quote; the bytes sent are checked against the guest's digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.ita.conftest import SECRET, StandIn, claims_of, control, ita_config, start
from tests.ita.test_intel_ta import Guest
from tests.kbs.helpers import Kbs, run_kbs_expect_exit
from tests.procs import free_port
from tests.tdx.corpus import V4
from trustee_common.canonical import HashAlgorithm, primary_runtime_data, runtime_data_digest

pytestmark = pytest.mark.e2e
V1 = 'api_version = "v1"\npolicy_ids = ["policy-a"]'


@pytest.fixture(scope="module")
def v1_kbs(tmp_path_factory: pytest.TempPathFactory, standin: StandIn) -> Iterator[Kbs]:
    directory = tmp_path_factory.mktemp("kbs-ita-v1")
    port = free_port()
    server = start(directory, ita_config(port, directory / "repo", standin.url, extra=V1), standin, port)
    yield server
    server.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def test_release_through_v1(reset: StandIn, v1_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    guest = Guest(v1_kbs, http)
    status, reply = await guest.attest()
    assert status == 200, reply
    claims = claims_of(reply["token"])
    assert claims["ver"] == "1.0.0" and "tdx" not in claims
    assert claims["attester_tcb_status"] == "UpToDate" and claims["tdx_mrtd"]
    assert claims["attester_runtime_data"]["tee-pubkey"] == guest.key.public_jwk()
    status, envelope = await guest.resource()
    assert status == 200, envelope
    assert guest.key.decrypt(envelope) == SECRET


async def test_v1_body(reset: StandIn, v1_kbs: Kbs, http: aiohttp.ClientSession) -> None:
    guest = Guest(v1_kbs, http)
    assert (await guest.attest())[0] == 200
    body = await control(reset, "last")
    assert set(body) == {"quote", "runtime_data", "policy_ids", "policy_must_match"}
    assert body["quote"] == base64.b64encode(V4.quote).decode()
    assert body["policy_ids"] == ["policy-a"] and body["policy_must_match"] is True
    sent = base64.b64decode(body["runtime_data"])
    digest = runtime_data_digest(primary_runtime_data(guest.nonce, guest.key.public_jwk(), ""), HashAlgorithm.SHA512)
    assert hashlib.sha512(sent).digest() == digest
    assert json.loads(sent)["tee-pubkey"] == guest.key.public_jwk()


def test_bad_api_version_refused(tmp_path: Path, standin: StandIn) -> None:
    config = ita_config(free_port(), tmp_path / "repo", standin.url, extra='api_version = "v3"')
    code, output = run_kbs_expect_exit(tmp_path, config)
    assert code != 0
    assert "attestation_service.api_version" in output and "'v3'" in output
