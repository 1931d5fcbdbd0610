"""Upstream Trustee's KBS config files (structural copies in upstream_configs/kbs/) against our parser and our `kbs`.

Each fixture is named after its upstream path (`/` written `__`; a
Markdown block as `<file>.md.block<N>`, as `scripts/check_upstream_configs.py`
numbers them; a Helm template rendered with the chart's defaults). `INDEX`
says what must happen after only its file paths and ports are changed
(the checker's `rewrite`): it starts, or it is refused with a message,
because upstream refuses it too or because the feature is not built here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kbs.config import parse_kbs_config
from tests.kbs.helpers import Material, make_material, tls_files
from tests.procs import Proc, free_port, script
from trustee_common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "upstream_configs" / "kbs"
NO_TRUST = "no trusted verification material"
UPSTREAM_TOO = "upstream refuses it too"


@dataclass(frozen=True)
class Expect:
    #: None: the KBS starts; else a piece of the one-line refusal.
    refused: str | None = None
    why: str = ""
    #: False: parsed, but not started by the tests (it needs a service the test does not run).
    starts: bool = True


EXTERNAL = Expect(why="external plugin: parses; starting needs the plugin server at its endpoint (the KBS exits when a backend "
                  "is unreachable, tests/kbs/test_external_plugin.py)", starts=False)
#: Parsed; at start the KBS fetches Intel's JWK set (tests/ita drives it against a stand-in ITA instead).
ITA = Expect(why="intel_ta: starting it fetches the JWK set from Intel's portal (tests/ita uses a stand-in)", starts=False)
#: Upstream refuses these at start (no token trust material); with coco_as_builtin ours trusts the embedded AS's key.
BUILTIN_TRUST = "starts here although upstream refuses it: the KBS trusts its embedded AS's signing key in process"
NO_TRUST_UPSTREAM = Expect(NO_TRUST, UPSTREAM_TOO + " at start (no trusted verification materials)")

INDEX: dict[str, Expect] = {
    "kbs__config__kbs-config.toml": Expect(),
    "kbs__config__kbs-config-grpc.toml": Expect(),
    "kbs__config__kbs-config-intel-trust-authority.toml": ITA,
    "kbs__config__docker-compose__kbs-config.toml": Expect(),
    "kbs__config__kubernetes__base__kbs-config.toml": Expect(),
    "kbs__config__kubernetes__ita__kbs-config.toml": ITA,
    "deployment__helm-chart__files__kbs-config.toml.template.toml": Expect(),
    "kbs__test__config__external-plugin.toml": EXTERNAL,
    "kbs__test__config__external-plugin-attest.toml": EXTERNAL,
    "kbs__test__config__external-plugin-resource.toml": EXTERNAL,
    "kbs__test__config__external-plugin-resource-tls.toml": EXTERNAL,
    "kbs__test__config__external-plugin-tls.toml": EXTERNAL,
    "kbs__test__config__kbs.toml": Expect(),
    "kbs__test__config__resource-kbs.toml": Expect(),
    "kbs__test__test_data__configs__external-plugin-test.toml": EXTERNAL,
    "kbs__test_data__configs__coco-as-builtin-1.toml": Expect("certificate and private_key are required",
                                                              UPSTREAM_TOO + " (Missing certificate)"),
    "kbs__test_data__configs__coco-as-builtin-2.toml": Expect(why=BUILTIN_TRUST),
    "kbs__test_data__configs__coco-as-builtin-3.toml": Expect("identity_providers needs at least one entry", UPSTREAM_TOO),
    "kbs__test_data__configs__coco-as-grpc-1.toml": Expect(),
    "kbs__test_data__configs__coco-as-grpc-2.toml": Expect(NO_TRUST, NO_TRUST_UPSTREAM.why),
    "kbs__test_data__configs__coco-as-grpc-3.toml": NO_TRUST_UPSTREAM,
    "kbs__test_data__configs__intel-ta-1.toml": Expect("base_url 'example.io' must be an https:// URL",
                                                       "upstream parses it, then fails every attestation (no URL scheme)"),
    "kbs__test_data__configs__intel-ta-2.toml": ITA,
    "kbs__test_data__configs__intel-ta-3.toml": ITA,
    "kbs__test_data__configs__tls-profile-custom.toml": NO_TRUST_UPSTREAM,
    "kbs__test_data__configs__tls-profile-custom-pqc.toml": NO_TRUST_UPSTREAM,
    "kbs__test_data__configs__tls-profile-intermediate.toml": NO_TRUST_UPSTREAM,
    "kbs__test_data__configs__tls-profile-modern.toml": NO_TRUST_UPSTREAM,
    "kbs__test_data__configs__tls-profile-old.toml": NO_TRUST_UPSTREAM,
    "kbs__docs__config.md.block1.toml": Expect("certificate and private_key are required", "a snippet; " + UPSTREAM_TOO),
    "kbs__docs__config.md.block2.toml": Expect(why=BUILTIN_TRUST),
    "kbs__docs__config.md.block3.toml": Expect(why=BUILTIN_TRUST + "; its [admin] type is refused upstream too (ours maps it)"),
    "kbs__docs__config.md.block4.toml": Expect(NO_TRUST, NO_TRUST_UPSTREAM.why),
    "kbs__docs__config.md.block5.toml": ITA,
    "kbs__docs__config.md.block6.toml": Expect("plugin 'nebula-ca' is not supported here", "nebula-ca: non-default cargo feature"),
    "kbs__docs__config.md.block7.toml": Expect(),
    "kbs__docs__config.md.block8.toml": NO_TRUST_UPSTREAM,
    "kbs__docs__config.md.block9.toml": NO_TRUST_UPSTREAM,
    "kbs__docs__config.md.block10.toml": Expect("names no TLS 1.2 suite", UPSTREAM_TOO + " (set_cipher_list selects nothing)"),
    "kbs__docs__config.md.block11.toml": NO_TRUST_UPSTREAM,
    "kbs__docs__self-signed-https.md.toml": Expect(),
    "deps__verifier__src__se__README.md.block1.toml": Expect(),
    "deps__verifier__src__se__README.md.block2.toml": Expect(),
}


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_upstream_configs", ROOT / "scripts" / "check_upstream_configs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CHECKER = _checker()


def params() -> list[Any]:
    return list(INDEX)


def load(name: str, base: Path) -> dict[str, Any]:
    data: dict[str, Any] = CHECKER.rewrite(tomllib.loads((FIXTURES / name).read_text()), base)
    return data


def test_every_fixture_is_indexed() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.toml")) == sorted(INDEX)


@pytest.mark.parametrize("name", params())
def test_parser_outcome(name: str, tmp_path: Path) -> None:
    expect = INDEX[name]
    data = load(name, tmp_path)
    if expect.refused is None:
        parse_kbs_config(data, default_dir=tmp_path)
        return
    with pytest.raises(ConfigError) as raised:
        parse_kbs_config(data, default_dir=tmp_path)
    assert expect.refused in raised.value.detail


# --- starting the real `kbs` ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("material"))


def provision(data: dict[str, Any], material: Material, base: Path) -> bytes:
    """Put real files where the rewritten config points (TLS pair, trust anchors, admin key); returns the TLS CA."""
    cert, key, ca_pem = tls_files(base)
    http = data.get("http_server", {})
    for field, source in (("certificate", cert), ("private_key", key)):
        if field in http:
            _copy(source, Path(http[field]))
    for path in data.get("attestation_token", {}).get("trusted_certs_paths", []):
        _copy(material.ca_cert, Path(path))
    builtin = data.get("attestation_service", {})
    signer = builtin.get("attestation_token_broker", {}).get("signer", {})
    for field, source in (("key_path", material.token_key), ("cert_path", material.token_chain)):
        if field in signer:
            _copy(source, Path(signer[field]))
    ak_dir = builtin.get("verifier_config", {}).get("tpm_verifier", {}).get("trusted_ak_keys_dir")
    if ak_dir is not None:
        Path(ak_dir).mkdir(parents=True, exist_ok=True)
    providers = data.get("admin", {}).get("authentication", {}).get("bearer_jwt", {}).get("identity_providers", [])
    for provider in providers:
        if "public_key_uri" in provider:
            _copy(material.admin_public, Path(provider["public_key_uri"]))
    return ca_pem


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


@dataclass
class Started:
    proc: Proc
    port: int
    ca_pem: bytes


@pytest.fixture
def run(tmp_path: Path, material: Material) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(data: dict[str, Any]) -> Started:
        ca_pem = provision(data, material, tmp_path)
        http = data.setdefault("http_server", {})
        if "sockets" not in http:  # upstream's default 127.0.0.1:8080, moved like any other port
            http["sockets"] = [f"127.0.0.1:{free_port()}"]
        config = tmp_path / "kbs.json"
        config.write_text(json.dumps(data))
        port = int(data["http_server"]["sockets"][0].rpartition(":")[2])
        proc = Proc([script("kbs"), "--config-file", str(config)], tmp_path / "kbs.log", port=port)
        procs.append(proc)
        return Started(proc, port, ca_pem)

    yield start
    for proc in procs:
        assert proc.stop() == 0, proc.output()


def http_status(port: int, path: str, *, ca_pem: bytes | None = None, version: ssl.TLSVersion | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request over loopback (TLS when `ca_pem`); (status, body)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    stream: socket.socket = raw
    if ca_pem is not None:
        context = ssl.create_default_context(cadata=ca_pem.decode())
        if version is not None:
            context.minimum_version = context.maximum_version = version
        stream = context.wrap_socket(raw, server_hostname="127.0.0.1")
    with stream:
        stream.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := stream.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("name", [n for n in params() if INDEX[n].refused is None and INDEX[n].starts])
def test_fixture_that_should_start_starts(name: str, tmp_path: Path, run: Any) -> None:
    data = load(name, tmp_path / "files")
    started = run(data)
    tls = not data["http_server"].get("insecure_http", False)
    assert http_status(started.port, "/healthz", ca_pem=started.ca_pem if tls else None)[0] == 200


def with_trust(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The one addition upstream needs as well to start these (it refuses a KBS with no token trust material)."""
    data.setdefault("attestation_token", {})["trusted_certs_paths"] = [str(base / "token-ca.pem")]
    return data


@pytest.mark.parametrize(("profile", "tls12"), [("modern", False), ("intermediate", True), ("old", True)])
def test_tls_profile_fixtures_serve_https_with_their_versions(profile: str, tls12: bool, tmp_path: Path, run: Any) -> None:
    data = with_trust(load(f"kbs__test_data__configs__tls-profile-{profile}.toml", tmp_path), tmp_path)
    started = run(data)
    assert http_status(started.port, "/healthz", ca_pem=started.ca_pem, version=ssl.TLSVersion.TLSv1_3)[0] == 200
    if tls12:
        assert http_status(started.port, "/healthz", ca_pem=started.ca_pem, version=ssl.TLSVersion.TLSv1_2)[0] == 200
    else:
        with pytest.raises(ssl.SSLError):
            http_status(started.port, "/healthz", ca_pem=started.ca_pem, version=ssl.TLSVersion.TLSv1_2)


def test_pqc_groups_fixture_starts_with_the_first_group_it_knows(tmp_path: Path, run: Any) -> None:
    data = with_trust(load("kbs__test_data__configs__tls-profile-custom-pqc.toml", tmp_path), tmp_path)
    started = run(data)
    assert http_status(started.port, "/healthz", ca_pem=started.ca_pem)[0] == 200
    log = started.proc.output()
    assert log.count("tls_groups 'X25519MLKEM768:X25519:secp256r1': Python's ssl sets one group, X25519 is used") == 1, log


def test_insecure_http_on_all_addresses_starts_with_one_warning(tmp_path: Path, run: Any) -> None:
    """docker-compose's KBS (0.0.0.0, plain HTTP, admin key, kvstorage resources on its LocalFs storage)."""
    data = load("kbs__config__docker-compose__kbs-config.toml", tmp_path)
    started = run(data)
    assert http_status(started.port, "/healthz")[0] == 200
    assert http_status(started.port, "/kbs/v0/resource/one/two/three")[0] == 401  # the resource plugin answers: no token
    assert started.proc.output().count("INSECURE: the KBS serves plain HTTP (insecure_http = true) on non-loopback") == 1


def test_https_kvstorage_and_sample_plugin_fixture(tmp_path: Path, run: Any) -> None:
    """coco-as-grpc-1: HTTPS, DenyAll, sample + kvstorage resource plugins, on its own storage type."""
    data = load("kbs__test_data__configs__coco-as-grpc-1.toml", tmp_path)
    started = run(data)
    assert http_status(started.port, "/kbs/v0/sample/anything", ca_pem=started.ca_pem)[0] == 403  # DenyAll: admin only
    assert http_status(started.port, "/kbs/v0/resource/a/b/c", ca_pem=started.ca_pem)[0] == 401


def test_sample_plugin_answers_its_text_to_an_admin(tmp_path: Path, run: Any) -> None:
    data = load("kbs__test_data__configs__coco-as-grpc-3.toml", tmp_path)
    data = with_trust(data, tmp_path)
    data["admin"] = {"type": "InsecureAllowAll"}  # the v0.16 form, read as authorization_mode (with a warning)
    data["plugins"] = [{"name": "sample", "item": "value1"}]
    data["http_server"].update(worker_count=1, sockets=[f"127.0.0.1:{CHECKER.free_port()}"])
    started = run(data)
    assert http_status(started.port, "/kbs/v0/sample/x/y") == (200, b"sample plugin response")
    log = started.proc.output()
    assert log.count("accepted with differences from upstream") == 1, log
    assert "http_server.worker_count: upstream's actix thread count, taken as workers = 1" in log
    assert 'admin.type: the v0.16-0.17 form, read as authorization_mode = "InsecureAllowAll"' in log


# --- the checker script over a fake checkout --------------------------------------------------------------------------------


def fake_checkout(root: Path) -> None:
    """The fixtures laid out at their upstream paths (Markdown blocks and the Helm template left out: not files there)."""
    for name in INDEX:
        if ".md." in name or ".template." in name:
            continue
        target = root / name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / name, target)
    blocks = [(FIXTURES / f"kbs__docs__config.md.block{i}.toml").read_text() for i in (7, 8)]
    (root / "kbs" / "docs").mkdir(parents=True, exist_ok=True)
    markdown = "# Config\n\n```toml\n[storage_backend]\n```\n\n" + "".join(f"```toml\n{b}```\n\n" for b in blocks)
    (root / "kbs" / "docs" / "config.md").write_text(markdown)
    (root / "rvps.json").write_text(json.dumps({"storage": {"type": "LocalJson"}}))
    as_block = (FIXTURES.parent / "as" / "docs-dcap.json").read_text().replace("@RVPS_HOSTPORT@", "rvps.example:50003")
    (root / "attestation-service" / "docs").mkdir(parents=True)
    (root / "attestation-service" / "docs" / "config.md").write_text(
        f"# AS\n\n```json\n{{\"not\": \"a config\"}}\n```\n\n```json\n{as_block}\n```\n")
    helm = root / "deployment" / "helm-chart" / "files"
    helm.mkdir(parents=True, exist_ok=True)
    (helm / "as-config.json.template").write_text(
        '{\n    "rvps_config": {"type": "GrpcRemote", "address": "http://{{ include "coco-trustee.svc.rvps" . }}:50003"},\n'
        '    "verifier_config": {\n        {{- include "coco-trustee.as.verifier" . | nindent 8 }}\n    }\n}\n')
    (root / "Cargo.toml").write_text("[package]\nname = 'x'\n")


def test_checker_reports_every_config_of_a_checkout(tmp_path: Path) -> None:
    fake_checkout(tmp_path / "trustee")
    output = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_upstream_configs.py"), str(tmp_path / "trustee")],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    lines = {line.split()[0]: line for line in output.splitlines()}
    files = [n.replace("__", "/") for n in INDEX if ".md." not in n and ".template." not in n]
    assert set(lines) == {*files, "kbs/docs/config.md#block1", "kbs/docs/config.md#block2", "rvps.json",
                          "attestation-service/docs/config.md#block1", "deployment/helm-chart/files/as-config.json.template"}, output
    assert lines["attestation-service/docs/config.md#block1"].split()[1:3] == ["as", "OK"], output
    helm_as = lines["deployment/helm-chart/files/as-config.json.template"]
    assert helm_as.split()[1:3] == ["as", "OK"], output  # rendered with the verifier fragment, not skipped
    assert "refused" not in lines["kbs/test/config/external-plugin.toml"]
    assert NO_TRUST in lines["kbs/docs/config.md#block2"]
    assert "rvps" in lines["rvps.json"].split()[1]
    tls_custom = lines["kbs/test_data/configs/tls-profile-custom.toml"]
    assert NO_TRUST in tls_custom
