"""`restful-as`: upstream's RESTful Attestation Service API over the real service, on loopback.

The process is started from an AS config in upstream's JSON shape; tokens
are checked with joserfc and the x5c chain (`helpers.verify_token`).
The guest AA's `coco_as` token type gets its token from it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from guest.attesters.sample import SampleAttester
from tests.guest.guestprocs import aa_stub, start_aa
from tests.kbs.helpers import tls_files
from tests.procs import Proc, free_port, script
from trustee_common.b64 import url_encode
from trustee_common.canonical import primary_runtime_data, runtime_data_digest
from trustee_common.pki import ensure_token_signing_material, issue_leaf, make_ca, pem_cert, pem_private_key
from trustee_pb import attestation_agent_pb2 as aa_pb

from .helpers import TEE_PUBKEY, verify_token

INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\ninstance_id = "rest-1"\n'
POLICY = """package policy
import rego.v1
trust_claims := {"instance-identity": 0, "configuration": 2, "executables": 33, "file-system": 0, "hardware": 97,
                 "runtime-opaque": 0, "storage-opaque": 0, "sourced-data": 0}
"""


def as_config(directory: Path, **extra: object) -> Path:
    keys = ensure_token_signing_material(directory / "keys")
    config = directory / "as-config.json"
    config.write_text(json.dumps({
        **extra,
        "audit": {"path": "audit.jsonl"},
        "work_dir": str(directory / "work"),  # upstream's obsolete key: accepted with a warning
        "storage_backend": {"storage_type": "Sqlite", "backends": {"sqlite": {"path": str(directory / "as.sqlite3")}}},
        "attestation_token_broker": {"signer": {"key_path": str(keys.token_key), "cert_path": str(keys.token_cert_chain)}},
    }))
    return config


class RestfulAs:
    def __init__(self, directory: Path, *extra: str, host: str = "127.0.0.1", config: dict[str, object] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = as_config(directory, **(config or {}))
        self.ca = directory / "keys" / "ca.pem"
        self.proc = Proc([script("restful-as"), "-s", f"{host}:{self.port}", "-c", str(path), *extra], directory / "restful-as.log",
                         port=self.port)

    def post(self, path: str, body: object, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, data=json.dumps(body), timeout=30, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestfulAs]:
    started = RestfulAs(tmp_path_factory.mktemp("restful-as"))
    yield started
    assert started.proc.stop() == 0


def attestation_body(nonce: str = "bm9uY2U=", **item: object) -> dict[str, Any]:
    runtime = primary_runtime_data(nonce, TEE_PUBKEY, "")
    evidence = SampleAttester().get_evidence(runtime_data_digest(runtime))
    entry = {"tee": "sample", "evidence": url_encode(json.dumps(evidence).encode()), "runtime_data": {"structured": runtime},
             "runtime_data_hash_algorithm": "sha384", **item}
    return {"verification_requests": [entry], "policy_ids": []}


def test_health_jwks_and_the_default_policies(server: RestfulAs) -> None:
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(server.url + "/policy", timeout=10).json() == [{"policy-id": "default_cpu"}, {"policy-id": "default_gpu"}]
    keys = requests.get(server.url + "/.well-known/jwks.json", timeout=10).json()["keys"]
    assert [k["kty"] for k in keys] == ["EC"]
    assert "work_dir" in server.proc.output()  # one warning line names the obsolete key


def test_attestation_returns_a_bare_token_the_guest_key_and_init_data_are_in(server: RestfulAs) -> None:
    response = server.post("/attestation", attestation_body(init_data={"init_data_toml": INIT_DATA}))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    claims = verify_token(response.text, server.ca.read_bytes())
    annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert annotated["runtime_data_claims"]["tee-pubkey"] == TEE_PUBKEY
    assert annotated["init_data_claims"] == {"instance_id": "rest-1"}
    assert claims["submods"]["cpu0"]["ear.status"] == "contraindicated"  # no reference values for the sample TEE


def test_raw_runtime_data_and_an_init_data_digest(server: RestfulAs) -> None:
    report_data = bytes(range(48))
    evidence = {"svn": "1", "report_data": base64.b64encode(report_data).decode()}
    body = {"verification_requests": [{"tee": "sample", "evidence": url_encode(json.dumps(evidence).encode()),
                                       "runtime_data": {"raw": url_encode(report_data)},
                                       "init_data": {"init_data_digest": url_encode(b"\x01" * 48)}}],
            "policy_ids": ["default"]}  # the AS appends the TEE class: default_cpu
    response = server.post("/attestation", body)
    assert response.status_code == 200, response.text
    annotated = verify_token(response.text, None)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert base64.b64decode(annotated["init_data"]) == b"\x01" * 48


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"verification_requests": []}, 400, "verification_requests: must be a non-empty list"),
        ({k: v for k, v in attestation_body().items() if k != "policy_ids"}, 400, "policy_ids: required"),
        (attestation_body(tee="nowhere"), 400, "tee"),
        (attestation_body(runtime_data={"raw": "x", "structured": {}}), 400, "exactly one of raw, structured"),
        (attestation_body(init_data={"init_data_toml": 7}), 400, "init_data.init_data_toml: must be a string"),
        (attestation_body(evidence="!!"), 400, "evidence"),
        ("not an object", 400, "must be a JSON object"),
    ],
)
def test_bad_attestation_requests_get_a_clear_error(server: RestfulAs, body: object, status: int, detail: str) -> None:
    response = server.post("/attestation", body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_evidence_for_another_nonce_is_refused(server: RestfulAs) -> None:
    body = attestation_body()
    body["verification_requests"][0]["runtime_data"] = {"structured": primary_runtime_data("b3RoZXI=", TEE_PUBKEY, "")}
    response = server.post("/attestation", body)
    assert response.status_code == 401 and response.json()["detail"] == "report data does not match"


def test_policy_set_and_listed_and_bad_policies_refused(server: RestfulAs) -> None:
    response = server.post("/policy", {"policy_id": "rest_cpu", "policy": url_encode(POLICY.encode()), "type": "rego"})
    assert response.status_code == 200 and response.content == b""
    assert {"policy-id": "rest_cpu"} in requests.get(server.url + "/policy", timeout=10).json()
    token = server.post("/attestation", {**attestation_body(), "policy_ids": ["rest"]}).text
    assert verify_token(token, None)["submods"]["cpu0"]["ear.trustworthiness-vector"]["hardware"] == 97
    for body, detail in (({"policy_id": "x"}, '{"policy_id"'), ({"policy_id": "x", "policy": "%%"}, "policy"),
                         ({"policy_id": "x", "policy": url_encode(b"package policy\nallow if {")}, "does not compile")):
        response = server.post("/policy", body)
        assert response.status_code == 400 and detail in response.json()["detail"], response.text
    assert {"policy-id": "x"} not in requests.get(server.url + "/policy", timeout=10).json()
    events = [json.loads(line) for line in (server.directory / "audit.jsonl").read_text().splitlines()]
    changes = [(ev["service"], ev["action"], ev["outcome"], ev["target"]["policy_id"]) for ev in events]
    assert ("restful-as", "attestation_policy.set", "ok", "rest_cpu") in changes
    assert ("restful-as", "attestation_policy.set", "failed", "x") in changes  # the policy that did not compile


def test_challenge_and_unknown_routes(server: RestfulAs) -> None:
    assert base64.b64decode(server.post("/challenge", {"tee": "sample", "tee_params": ""}).text)
    assert server.post("/challenge", {"tee_params": ""}).status_code == 400
    response = requests.get(server.url + "/attestation", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert requests.get(server.url + "/nowhere", timeout=10).status_code == 404


async def test_the_guest_aa_gets_its_coco_as_token_here(server: RestfulAs, tmp_path: Path) -> None:
    config = tmp_path / "aa.toml"
    config.write_text(f'[token_configs.coco_as]\nurl = "{server.url}/"\n')
    aa = start_aa(tmp_path, "-c", str(config))
    try:
        async with grpc.aio.insecure_channel(aa.addr) as channel:
            reply = await aa_stub(channel).GetToken(aa_pb.GetTokenRequest(TokenType="coco_as"))  # type: ignore[attr-defined]
        claims = verify_token(reply.Token.decode(), server.ca.read_bytes())
        assert "sample" in claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    finally:
        aa.stop()


def test_policy_writes_on_a_non_loopback_address_need_consent(tmp_path: Path) -> None:
    refusing = RestfulAs(tmp_path / "open", host="0.0.0.0")
    try:
        response = refusing.post("/policy", {"policy_id": "p", "policy": url_encode(POLICY.encode())})
        assert response.status_code == 403 and "policy writes are refused" in response.json()["detail"]
        assert refusing.post("/attestation", attestation_body()).status_code == 200  # attesting needs no consent
    finally:
        refusing.proc.stop()
    consenting = RestfulAs(tmp_path / "consent", "--insecure-allow-writes", host="0.0.0.0")
    try:
        assert consenting.post("/policy", {"policy_id": "p", "policy": url_encode(POLICY.encode())}).status_code == 200
    finally:
        consenting.proc.stop()


def test_cors_answers_only_the_allowed_origins(tmp_path: Path) -> None:
    cors = RestfulAs(tmp_path, "-r", "https://ui.example,https://other.example")
    try:
        allowed = requests.options(cors.url + "/attestation", headers={"Origin": "https://ui.example"}, timeout=10)
        assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        other = requests.get(cors.url + "/policy", headers={"Origin": "https://evil.example"}, timeout=10)
        assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    finally:
        cors.proc.stop()


def test_https_with_upstreams_t_and_k_flags(tmp_path: Path) -> None:
    cert, key, ca_pem = tls_files(tmp_path)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    https = RestfulAs(tmp_path / "as", "-t", str(cert), "-k", str(key))
    try:
        url = f"https://127.0.0.1:{https.port}"
        assert requests.get(url + "/healthz", verify=str(tmp_path / "ca.pem"), timeout=10).status_code == 200
        response = requests.post(url + "/attestation", data=json.dumps(attestation_body()), verify=str(tmp_path / "ca.pem"), timeout=30)
        assert response.status_code == 200 and verify_token(response.text, https.ca.read_bytes())
    finally:
        https.proc.stop()


@pytest.mark.parametrize(("args", "message"), [([], "the following arguments are required: -s/--socket"),
                                               (["-s", "127.0.0.1:1", "-t", "/nonexistent.pem"], "-t/--https-pubkey-cert and -k")])
def test_bad_flags_stop_start_up(args: list[str], message: str) -> None:
    result = subprocess.run([script("restful-as"), *args], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr


def test_policy_writes_on_a_non_loopback_address_with_mutual_tls_need_a_client_certificate(tmp_path: Path) -> None:
    cert, key, ca_pem = tls_files(tmp_path)
    client_ca_key, client_ca = make_ca("operators")
    client_key, client_cert = issue_leaf(client_ca_key, client_ca, "operator-1")
    (tmp_path / "server-ca.pem").write_bytes(ca_pem)
    (tmp_path / "client-ca.pem").write_bytes(pem_cert(client_ca))
    (tmp_path / "client.pem").write_bytes(pem_cert(client_cert))
    (tmp_path / "client.key").write_bytes(pem_private_key(client_key))
    tls = {"certificate": str(cert), "private_key": str(key), "client_ca": str(tmp_path / "client-ca.pem")}
    mutual = RestfulAs(tmp_path / "as", host="0.0.0.0", config={"tls": tls})
    try:
        url, verify = f"https://127.0.0.1:{mutual.port}", str(tmp_path / "server-ca.pem")
        body = json.dumps({"policy_id": "p", "policy": url_encode(POLICY.encode())})
        client = (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        assert requests.post(url + "/policy", data=body, verify=verify, cert=client, timeout=30).status_code == 200
        with pytest.raises(requests.exceptions.RequestException):  # no client certificate: no TLS session at all
            requests.post(url + "/policy", data=body, verify=verify, timeout=30)
        assert "write call by client certificate 'operator-1'" in mutual.proc.output()
    finally:
        mutual.proc.stop()
