"""`[attestation_service] type = "coco_as_builtin"`: the AS inside the real `kbs` process (no grpc-as, no rvps).

The sample-TEE guest flow end to end; attestation policies and reference
values set through the KBS admin API change the next appraisal; tokens of
the embedded AS verify with no `trusted_certs_paths`; two workers share the
AS's state (one signing key, one policy set); a GrpcRemote RVPS variant; and
the config errors (one line, exit 2).
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict

from guest.attesters.sample import SampleAttester
from guest.kbs_protocol import AttesterEvidence, KbsClient
from kbs.config import parse_kbs_config
from rvps.client import RemoteReferenceValueProvider
from tests.kbs.helpers import ALLOW_ALL, Kbs, Material, policy_body, run_kbs_expect_exit, sqlite_storage, start_kbs, variant
from tests.procs import Proc, free_port, script
from trustee_common.b64 import std_encode, url_decode, url_encode
from trustee_common.errors import ConfigError

pytestmark = pytest.mark.e2e

MARKER_POLICY = 'package policy\nimport rego.v1\ntrust_claims := {"executables": 3, "hardware": 2, "configuration": 2}\n'
#: Requests spread over fresh connections, so the kernel hands some to each of 2 workers (all on one: 2^-23).
FANOUT = 24
WAIT_SECONDS = 30.0


def builtin_toml(port: int, material: Material, root: Path, *, rvps: str = 'type = "BuiltIn"', extra: str = "") -> str:
    """A KBS config with the embedded AS: no `trusted_certs_paths`, no AS address."""
    return f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{{ public_key_uri = "file://{material.admin_public}" }}]
[admin.authorization.regex_acl]
acls = [{{ role = "admin", allowed_endpoints = "^/kbs/v0/.*$" }}]

[attestation_service]
type = "coco_as_builtin"
timeout = 5
{extra}
[attestation_service.rvps_config]
{rvps}
[attestation_service.attestation_token_broker]
duration_min = 5
issuer_name = "builtin-test-issuer"

{sqlite_storage(root / "kbs.sqlite3")}

[[plugins]]
name = "resource"
type = "LocalFs"
dir_path = "{root / "repo"}"
"""


def claims(token: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(url_decode(token.split(".")[1], "payload"))
    return body


def header_jwk(token: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(url_decode(token.split(".")[0], "header"))["jwk"]
    return jwk


def guest(url: str) -> KbsClient:
    return KbsClient(url, evidence=AttesterEvidence(SampleAttester()))


async def admin(kbs: Kbs, material: Material, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {material.admin_token()}"}
    async with aiohttp.ClientSession() as http, http.request(method, kbs.api(path), headers=headers, **kwargs) as response:
        text = await response.read()
        return response.status, json.loads(text) if text else None


async def vector(url: str) -> tuple[int, int, int]:
    """The trustworthiness vector (executables, hardware, configuration) of a fresh attestation."""
    async with guest(url) as client:
        found = claims(await client.attest())["submods"]["cpu0"]["ear.trustworthiness-vector"]
    return found["executables"], found["hardware"], found["configuration"]


def rv_message(name: str, values: Any) -> dict[str, str]:
    return {"version": "0.1.0", "type": "sample", "payload": std_encode(json.dumps({name: values}).encode())}


async def prepare(kbs: Kbs, material: Material, path: str, data: bytes) -> None:
    assert (await admin(kbs, material, "POST", "resource-policy", json=policy_body(ALLOW_ALL)))[0] == 200
    assert (await admin(kbs, material, "POST", f"resource/{path}", data=data))[0] == 200


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    root = tmp_path_factory.mktemp("builtin")
    port = free_port()
    kbs = start_kbs(root, builtin_toml(port, material, root), port)
    yield kbs
    kbs.proc.stop()


async def test_sample_flow_end_to_end_without_an_as_process(builtin: Kbs, material: Material) -> None:
    await prepare(builtin, material, "builtin/key/one", b"in-process secret")
    async with guest(builtin.url) as client:
        assert await client.get_resource("resource/builtin/key/one") == b"in-process secret"
        token, key = client.token, client.key_pair
    assert token is not None
    body = claims(token)
    assert body["iss"] == "builtin-test-issuer"
    assert body["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"] == key.public_jwk()
    assert "x5c" not in header_jwk(token)  # trusted by key in process: no chain, no trusted_certs_paths
    async with KbsClient(builtin.url, token=token, key_pair=key) as passport:
        assert await passport.get_resource("resource/builtin/key/one") == b"in-process secret"
    async with aiohttp.ClientSession() as http, http.get(f"{builtin.url}/metrics") as response:
        assert 'as_attestation_evaluations_total{result="contraindicated",tee="sample"}' in await response.text()
    children = psutil.Process(builtin.proc.popen.pid).children(recursive=True)
    assert not [c for c in children if "grpc-as" in " ".join(c.cmdline()) or "rvps" in " ".join(c.cmdline())]


async def test_reference_values_and_attestation_policy_through_the_kbs_change_the_appraisal(builtin: Kbs, material: Material) -> None:
    assert await vector(builtin.url) == (33, 97, 2)  # the default policy, no reference values
    assert (await admin(builtin, material, "POST", "reference-value", json=rv_message("launch_digest", ["abcde"])))[0] == 200
    assert await vector(builtin.url) == (3, 97, 2)  # the sample TEE's launch digest is now a reference value
    assert await admin(builtin, material, "GET", "reference-value/launch_digest") == (200, ["abcde"])
    status, reply = await admin(builtin, material, "GET", "reference-value/no-such-rv")
    assert (status, variant(reply)) == (404, "ReferenceValueNotFound")
    status, reply = await admin(builtin, material, "POST", "reference-value", json={**rv_message("x", [1]), "version": "9.9.9"})
    assert status == 400, reply
    body = {"policy_id": "default_cpu", "policy": url_encode(MARKER_POLICY.encode())}
    assert (await admin(builtin, material, "POST", "attestation-policy", json=body))[0] == 200
    assert await vector(builtin.url) == (3, 2, 2)
    bad = {"policy_id": "default_cpu", "policy": url_encode(b"package policy\nallow if {")}
    status, reply = await admin(builtin, material, "POST", "attestation-policy", json=bad)
    assert (status, variant(reply)) == (400, "PolicyEngineError")
    assert await vector(builtin.url) == (3, 2, 2)  # the refused policy replaced nothing


def test_the_generated_signing_key_is_kept_private(builtin: Kbs) -> None:
    database = builtin.config.parent / "kbs.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


# --- two workers ------------------------------------------------------------------


def listening_children(kbs: Kbs) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(kbs.proc.popen.pid).children():
        try:
            if kbs.port in {c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def served_by_worker(kbs: Kbs, metric: str) -> dict[int, float]:
    """`metric` (a counter) of each worker, from its prometheus multiprocess file."""
    found: dict[int, float] = {}
    for worker in listening_children(kbs):
        path = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"]) / f"counter_{worker.pid}.db"
        total = 0.0
        if path.exists():
            total = sum(v for key, v, *_ in MmapedDict.read_all_values_from_file(str(path)) if json.loads(key)[0] == metric)
        found[worker.pid] = total
    return found


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    root = tmp_path_factory.mktemp("builtin-workers")
    port = free_port()
    kbs = start_kbs(root, builtin_toml(port, material, root), port, args=("--workers", "2"))
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(listening_children(kbs)) != 2:
            assert time.monotonic() < deadline, f"2 workers did not listen:\n{kbs.proc.output()}"
            time.sleep(0.1)
        yield kbs
    finally:
        kbs.proc.stop()


async def test_a_token_from_one_worker_is_accepted_by_the_other(two_workers: Kbs, material: Material) -> None:
    await prepare(two_workers, material, "workers/key/one", b"shared")
    tokens = []
    for _ in range(4):
        async with guest(two_workers.url) as client:
            tokens.append(await client.attest())
            key = client.key_pair
    assert len({json.dumps(header_jwk(t), sort_keys=True) for t in tokens}) == 1  # one signing key, kept in storage

    async def fetch() -> bytes:
        async with KbsClient(two_workers.url, token=tokens[-1], key_pair=key) as passport:  # a new connection each
            return await passport.get_resource("resource/workers/key/one")

    before = served_by_worker(two_workers, "kbs_resource_reads")
    assert await asyncio.gather(*(fetch() for _ in range(FANOUT))) == [b"shared"] * FANOUT
    after = served_by_worker(two_workers, "kbs_resource_reads")
    assert len(after) == 2 and all(after[pid] > before.get(pid, 0.0) for pid in after), (before, after)


async def test_an_attestation_policy_set_at_one_worker_applies_at_both(two_workers: Kbs, material: Material) -> None:
    body = {"policy_id": "default_cpu", "policy": url_encode(MARKER_POLICY.encode())}
    assert (await admin(two_workers, material, "POST", "attestation-policy", json=body))[0] == 200
    before = served_by_worker(two_workers, "kbs_attestation_requests")
    deadline = time.monotonic() + 10.0  # the other worker's appraisal cache: 1 s, polled on a loaded machine
    while True:
        vectors = await asyncio.gather(*(vector(two_workers.url) for _ in range(FANOUT)))
        if all(v == (3, 2, 2) for v in vectors) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert all(v == (3, 2, 2) for v in vectors), vectors
    after = served_by_worker(two_workers, "kbs_attestation_requests")
    assert all(after[pid] > before.get(pid, 0.0) for pid in after), (before, after)


# --- GrpcRemote RVPS --------------------------------------------------------------


@dataclass
class RemoteStack:
    kbs: Kbs
    rvps_port: int


@pytest.fixture(scope="module")
def remote_rvps(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[RemoteStack]:
    root = tmp_path_factory.mktemp("builtin-remote-rvps")
    rvps_port, port = free_port(), free_port()
    (root / "rvps.toml").write_text(sqlite_storage(root / "rvps.sqlite3"))
    rvps = Proc([script("rvps"), "--config", str(root / "rvps.toml"), "--address", f"127.0.0.1:{rvps_port}"], root / "rvps.log",
                port=rvps_port)
    try:
        text = builtin_toml(port, material, root, rvps=f'type = "GrpcRemote"\naddress = "127.0.0.1:{rvps_port}"')
        kbs = start_kbs(root / "kbs", text, port)
        try:
            yield RemoteStack(kbs, rvps_port)
        finally:
            kbs.proc.stop()
    finally:
        rvps.stop()


async def test_reference_values_go_to_the_remote_rvps(remote_rvps: RemoteStack, material: Material) -> None:
    kbs = remote_rvps.kbs
    assert await vector(kbs.url) == (33, 97, 2)
    assert (await admin(kbs, material, "POST", "reference-value", json=rv_message("launch_digest", ["abcde"])))[0] == 200
    direct = RemoteReferenceValueProvider(f"127.0.0.1:{remote_rvps.rvps_port}")
    try:
        assert json.loads(await direct.query("launch_digest") or "null") == ["abcde"]  # stored by the RVPS process
    finally:
        await direct.close()
    assert await vector(kbs.url) == (3, 97, 2)
    assert await admin(kbs, material, "GET", "reference-value/launch_digest") == (200, ["abcde"])


# --- configuration ----------------------------------------------------------------


def parsed(tmp_path: Path, material: Material, *, extra: str = "", rvps: str = 'type = "BuiltIn"') -> Any:
    import tomllib

    return parse_kbs_config(tomllib.loads(builtin_toml(1, material, tmp_path, rvps=rvps, extra=extra)), default_dir=tmp_path)


def test_upstream_keys_parse(tmp_path: Path, material: Material) -> None:
    extra = 'storage_type = "Memory"\npolicy_engine = "opa"\n[attestation_service.verifier_config.tpm_verifier]\n'
    config = parsed(tmp_path, material, extra=extra)
    builtin = config.attestation_service.builtin
    assert builtin is not None and builtin.service.storage.storage_type == "Memory" and builtin.policy_engine is None
    assert builtin.service.token.issuer_name == "builtin-test-issuer" and builtin.service.tpm is not None
    assert config.attestation_service.session_timeout_minutes == 5
    alias = parsed(tmp_path, material, extra="[attestation_service.policy_engine]\nworkers = 1\n")
    assert alias.attestation_service.builtin.policy_engine.workers == 1
    assert parsed(tmp_path, material).attestation_service.builtin.service.storage.storage_type == "Sqlite"


@pytest.mark.parametrize(("extra", "words"), [
    ('as_addr = "http://127.0.0.1:1"', "coco_as_grpc"),
    ('storage_type = "Redis"', "storage_type"),
    ('storage_type = "Nope"', "storage_type"),
    ('policy_engine = "wasm"', "policy_engine"),
    ("unknown_key = 1", "unknown_key"),
])
def test_bad_builtin_keys_are_named(tmp_path: Path, material: Material, extra: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parsed(tmp_path, material, extra=extra)


def test_intel_ta_without_its_keys_is_refused(tmp_path: Path, material: Material) -> None:
    text = builtin_toml(free_port(), material, tmp_path).replace('type = "coco_as_builtin"', 'type = "intel_ta"')
    code, output = run_kbs_expect_exit(tmp_path, text)
    assert code == 2, output
    assert "attestation_service.base_url" in output and "Traceback" not in output


def test_upstream_alias(tmp_path: Path, material: Material) -> None:
    import tomllib

    text = builtin_toml(1, material, tmp_path).replace('type = "coco_as_builtin"', 'type = "CoCoASBuiltIn"')
    assert parse_kbs_config(tomllib.loads(text), default_dir=tmp_path).attestation_service.builtin is not None


def test_an_unreadable_signer_key_is_refused_before_any_worker_starts(tmp_path: Path, material: Material) -> None:
    text = builtin_toml(free_port(), material, tmp_path)
    text += f'\n[attestation_service.attestation_token_broker.signer]\nkey_path = "{tmp_path / "missing.key"}"\n'
    code, output = run_kbs_expect_exit(tmp_path, text, args=("--workers", "2"))
    assert code == 2, output
    assert "token signing key" in output and "missing.key" in output and "Traceback" not in output
