"""Attestation reports and init-data claims in the resource policy, on real processes (docs/attestation-reports.md).

`trustee run` (KBS, AS, RVPS over gRPC; the KBS signs reports with the
AS's token key that `trustee run` wires in) and the guest's `KbsClient`
with init-data bound to the sample TEE's evidence: the key is released to
the pod whose init-data says `instance_id = "a"` and refused to `"b"`, and a
pod bound to a's init-data that sends another is refused; every `/attest`
(affirming, contraindicated by the attestation policy, rejected by the AS)
leaves a report, listed by instance id and time with a cursor and
verified offline with `<data-dir>/as/ca.pem` (HTTP and `kbs-client`).
On PostgreSQL the reports live in their own table; when that storage
is down `/attest` still answers and the loss is counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from cryptography import x509

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from kbs.core.reports import REPORT_NAMESPACE, verify_report
from tests.kbs.helpers import Kbs, Material, start_backend, start_kbs
from tests.procs import free_port
from tests.storage.servers import start_postgres
from tests.tools.stack import TrusteeRun, run_tool
from trustee_common.errors import TrusteeError
from trustee_common.pki import make_ca, pem_cert

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 60.0
SECRET = b"key for instance a"
#: Released only when the init-data the AS bound to the TEE names instance "a" (both spellings of the path).
RESOURCE_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    input.init_data.instance_id == "a"
    input.submods.cpu0["ear.veraison.annotated-evidence"].init_data_claims.instance_id == "a"
}
"""
#: Affirming for instance "a" and "c", contraindicated (hardware 97) for anything else.
ATTESTATION_POLICY = """package policy
import rego.v1
default hardware := 97
hardware := 2 if input.init_data_claims.instance_id in {"a", "c"}
trust_claims := {"executables": 3, "hardware": hardware, "configuration": 2}
"""


def init_data(instance: str) -> str:
    return f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\ninstance_id = "{instance}"\n"aa.toml" = \'\'\'\n[token_configs]\n\'\'\'\n'


class WrongReportData(SampleAttester):
    """A guest whose evidence does not bind the session's nonce and key: the AS refuses it."""

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        return super().get_evidence(bytes(len(report_data)))


def guest(url: str, instance: str, attester: SampleAttester | None = None, bound: str | None = None) -> KbsClient:
    """A pod sending the init-data of `instance`, its sample TEE bound (as its AA binds at start) to `bound`'s (default: the same)."""
    attester = attester or SampleAttester()
    attester.bind_init_data(hashlib.sha384(init_data(bound or instance).encode()).digest())
    return KbsClient(url, evidence=AttesterEvidence(attester), init_data_toml=init_data(instance))


def admin_cli(stack: TrusteeRun, *args: str) -> str:
    result = run_tool("kbs-client", "--url", stack.url, "config", "--admin-token-file", str(stack.admin_token), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def list_reports(url: str, token: str, **query: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(f"{url}/kbs/v0/attestation-reports", params=query,
                                                          headers=headers) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None


async def wait_reports(url: str, token: str, count: int, **query: str) -> list[str]:
    """The reports once `count` of them are listed (they are written off the /attest path)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status, body = await list_reports(url, token, **query, limit="500")
        assert status == 200, body
        if len(body["reports"]) >= count:
            reports: list[str] = body["reports"]
            return reports
        assert time.monotonic() < deadline, f"{len(body['reports'])} of {count} reports listed: {body}"
        await asyncio.sleep(0.1)


def anchors(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrusteeRun]:
    base = tmp_path_factory.mktemp("reports")
    run = TrusteeRun(base / "data", base / "trustee.log")
    yield run
    run.stop()


async def test_reports_policy_on_init_data_listing_and_offline_verification(stack: TrusteeRun, tmp_path: Path) -> None:
    token = stack.admin_token.read_text().strip()
    policy_file, rego_file, secret_file = tmp_path / "policy.rego", tmp_path / "as.rego", tmp_path / "secret"
    policy_file.write_text(RESOURCE_POLICY)
    rego_file.write_text(ATTESTATION_POLICY)
    secret_file.write_bytes(SECRET)
    admin_cli(stack, "set-resource-policy", "--policy-file", str(policy_file))
    admin_cli(stack, "set-attestation-policy", "--policy-file", str(rego_file), "--id", "default_cpu")
    admin_cli(stack, "set-resource", "--path", "default/key/a", "--resource-file", str(secret_file))
    started = time.time()

    async with guest(stack.url, "a") as pod_a:
        assert await pod_a.get_resource("resource/default/key/a") == SECRET
        token_a = pod_a.token
    async with guest(stack.url, "b") as pod_b:
        with pytest.raises(TrusteeError) as refused:
            await pod_b.get_resource("resource/default/key/a")
        assert "PolicyDeny" in f"{refused.value.variant} {refused.value.detail}", refused.value
    async with guest(stack.url, "b", WrongReportData()) as forged:
        with pytest.raises(TrusteeError):
            await forged.attest()
    async with guest(stack.url, "m", bound="a") as mismatched:  # a pod bound to a's init-data sending m's
        with pytest.raises(TrusteeError) as mismatch:
            await mismatched.attest()
        assert "init data does not match the digest bound in the sample evidence" in str(mismatch.value)
    assert token_a is not None

    ca = anchors(stack.data_dir / "as" / "ca.pem")
    [report_a] = [verify_report(r, ca, time.time()) for r in await wait_reports(stack.url, token, 1, instance_id="a")]
    assert report_a["outcome"] == "attested" and report_a["tee"] == "sample"
    assert report_a["instance_id"] == "a" and report_a["instance_id_verified"] is True
    assert report_a["token_sha256"] == hashlib.sha256(token_a.encode()).hexdigest()
    assert report_a["identity"] == {"launch_digest": "abcde", "svn": "1"}
    [cpu0] = report_a["appraisals"]
    assert (cpu0["policy_id"], cpu0["status"]) == ("default", "affirming")  # the id the KBS asked for
    assert cpu0["trust_vector"]["hardware"] == 2
    digest = hashlib.sha384(init_data("a").encode()).digest()
    assert base64.b64decode(report_a["init_data_digest"]) == digest  # what the AS bound to the TEE's evidence
    assert "reason" not in report_a

    reports_b = [verify_report(r, ca, time.time()) for r in await wait_reports(stack.url, token, 2, instance_id="b")]
    rejected, contraindicated = reports_b  # newest first
    assert contraindicated["outcome"] == "attested" and contraindicated["instance_id_verified"] is True
    assert contraindicated["appraisals"][0]["status"] == "contraindicated"
    assert rejected["outcome"] == "rejected" and rejected["instance_id"] == "b"
    assert rejected["instance_id_verified"] is False  # read from the init-data sent: nothing bound it
    assert rejected["reason"]["type"] and "token_sha256" not in rejected and "appraisals" not in rejected
    assert rejected["time"] >= contraindicated["time"]
    [refused_m] = [verify_report(r, ca, time.time()) for r in await wait_reports(stack.url, token, 1, instance_id="m")]
    assert refused_m["outcome"] == "rejected" and refused_m["instance_id_verified"] is False
    assert "init data does not match" in json.dumps(refused_m["reason"])

    # Pagination and `since`: three more attestations of instance "c".
    for _ in range(3):
        async with guest(stack.url, "c") as pod_c:
            await pod_c.attest()
    page_all = await wait_reports(stack.url, token, 3, instance_id="c")
    status, first = await list_reports(stack.url, token, instance_id="c", limit="2")
    assert status == 200 and first["reports"] == page_all[:2] and "next_cursor" in first
    status, second = await list_reports(stack.url, token, instance_id="c", limit="2", cursor=first["next_cursor"])
    assert status == 200 and second["reports"] == page_all[2:] and "next_cursor" not in second
    newest = verify_report(page_all[0], ca, time.time())
    status, since = await list_reports(stack.url, token, instance_id="c", since=newest["time"])
    assert status == 200 and since["reports"] == page_all[:1]
    status, everyone = await list_reports(stack.url, token, since=str(started - 1))
    assert status == 200 and len(everyone["reports"]) == 7
    times = [verify_report(r, ca, time.time())["time"] for r in everyone["reports"]]
    assert times == sorted(times, reverse=True)

    # Refusals: bad query, no admin token.
    status, body = await list_reports(stack.url, token, limit="0")
    assert status == 400, body
    status, body = await list_reports(stack.url, token, cursor="not-a-cursor")
    assert status == 400, body
    async with aiohttp.ClientSession() as http, http.get(f"{stack.url}/kbs/v0/attestation-reports") as response:
        assert response.status == 401

    # The client verifies offline with the AS chain; a wrong anchor fails.
    out = admin_cli(stack, "get-attestation-reports", "--instance-id", "a", "--verify", "--cert-chain",
                    str(stack.data_dir / "as" / "ca.pem"))
    [line] = out.strip().splitlines()
    assert json.loads(line)["report_id"] == report_a["report_id"]
    out = admin_cli(stack, "get-attestation-reports", "--instance-id", "c", "--limit", "1", "--all")
    assert out.strip().splitlines() == page_all
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(pem_cert(make_ca("not the AS")[1]))
    result = run_tool("kbs-client", "--url", stack.url, "config", "--admin-token-file", str(stack.admin_token),
                      "get-attestation-reports", "--instance-id", "a", "--verify", "--cert-chain", str(wrong))
    assert result.returncode == 1 and "x5c" in result.stderr, result.stderr

    async with aiohttp.ClientSession() as http, http.get(f"{stack.url}/metrics") as response:
        text = await response.text()
    assert "kbs_attestation_reports_written_total 7.0" in text
    assert "kbs_attestation_reports_lost_total 0.0" in text


async def test_a_burst_of_attestations_leaves_one_verified_report_each(stack: TrusteeRun) -> None:
    """Reports queued together are written in one transaction: none is lost or merged."""
    token = stack.admin_token.read_text().strip()

    async def attest_once() -> str:
        async with guest(stack.url, "burst") as pod:
            await pod.attest()
            assert pod.token is not None
            return pod.token

    tokens = await asyncio.gather(*(attest_once() for _ in range(40)))
    ca = anchors(stack.data_dir / "as" / "ca.pem")
    reports = [verify_report(r, ca, time.time()) for r in await wait_reports(stack.url, token, 40, instance_id="burst")]
    assert len(reports) == 40 and len({r["report_id"] for r in reports}) == 40
    assert {r["token_sha256"] for r in reports} == {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    async with aiohttp.ClientSession() as http, http.get(f"{stack.url}/metrics") as response:
        text = await response.text()
    assert "kbs_attestation_reports_written_total 47.0" in text  # 7 from the test above
    assert "kbs_attestation_reports_lost_total 0.0" in text


def postgres_kbs_toml(port: int, material: Material, root: Path, as_port: int, url: str) -> str:
    return f"""
session_storage_type = "Memory"

[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{{ public_key_uri = "file://{material.admin_public}" }}]
[admin.authorization.regex_acl]
acls = [{{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$" }}]

[attestation_token]
trusted_certs_paths = ["{material.ca_cert}"]

[attestation_service]
type = "coco_as_grpc"
as_addr = "http://127.0.0.1:{as_port}"

[storage_backend]
storage_type = "Postgres"
[storage_backend.backends.postgres]
url = "{url}"

[attestation_reports]
signing_key = "{material.token_key}"
cert_chain = "{material.token_chain}"
retention_days = 7
"""


async def test_reports_on_postgres_and_a_storage_failure_does_not_fail_attest(material: Material, tmp_path: Path) -> None:
    server = start_postgres()
    backend = start_backend(tmp_path, material)
    kbs: Kbs | None = None
    running = True
    try:
        url = server.new_database()
        port = free_port()
        kbs = start_kbs(tmp_path / "kbs", postgres_kbs_toml(port, material, tmp_path, backend.as_port, url), port)
        admin_token = material.admin_token()
        async with guest(kbs.url, "pg") as pod:
            await pod.attest()
        [signed] = await wait_reports(kbs.url, admin_token, 1, instance_id="pg")
        report = verify_report(signed, anchors(material.ca_cert), time.time())
        assert report["instance_id"] == "pg" and report["outcome"] == "attested"
        with psycopg.connect(url) as conn:
            [(key, value, expires_at)] = conn.execute(f'SELECT key, value, expires_at FROM "{REPORT_NAMESPACE}"').fetchall()  # noqa: S608
        assert bytes(value).decode() == signed and key.startswith("i")
        assert 6.9 * 86400 < float(expires_at) - time.time() < 7.1 * 86400

        server.stop()  # the report store is gone; sessions are in memory
        running = False
        async with guest(kbs.url, "pg") as pod:
            assert await pod.attest()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            async with aiohttp.ClientSession() as http, http.get(f"{kbs.url}/metrics") as response:
                text = await response.text()
            if "kbs_attestation_reports_lost_total 1.0" in text:
                break
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert "attestation report(s) lost" in kbs.proc.output()
    finally:
        if kbs is not None:
            kbs.proc.stop()
        backend.stop()
        if running:
            server.stop()


async def test_builtin_as_signs_reports_without_a_configured_key(material: Material, tmp_path: Path) -> None:
    from tests.kbs.test_builtin_as import builtin_toml, claims, header_jwk

    port = free_port()
    text = builtin_toml(port, material, tmp_path) + "\n[attestation_reports]\nretention_days = 1\n"
    kbs = start_kbs(tmp_path, text, port)
    try:
        async with guest(kbs.url, "builtin") as pod:
            token = await pod.attest()
        [signed] = await wait_reports(kbs.url, material.admin_token(), 1, instance_id="builtin")
        assert header_jwk(signed) == header_jwk(token)  # the embedded AS's key, no chain
        assert claims(signed)["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    finally:
        kbs.proc.stop()
