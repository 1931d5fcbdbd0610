"""deploy/ without Docker or a cluster: the Compose file against the Compose specification, the Kubernetes
manifests against the Kubernetes API schemas, and every config in them through our real config loaders.

The schemas come from installed packages (check-jsonschema vendors compose-spec.json; kubernetes-validate ships
the Kubernetes schemas), never from the network. Cross-checks keep the files consistent with each other and with
the code: upstream's ports, the secrets `make-secrets.sh` writes, and each file path a config names being a key of
a mounted ConfigMap or Secret.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from attestation_service.config import AsConfig

from kbs.config import load_kbs_config
from rvps.config import RvpsConfig
from trustee_common.storage.urls import redact_url

DEPLOY = Path(__file__).parents[2] / "deploy"
K8S_VERSION = "1.30.0"
UPSTREAM_PORTS = {"kbs": 8080, "as": 50004, "rvps": 50003}


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POSTGRES_URL", "REDIS_URL", "KBS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def load_configs(directory: Path, files: dict[str, str]) -> tuple[Any, Any, Any]:
    """Write kbs-config.toml, as-config.json and rvps.json and parse each with its service's loader."""
    for name, text in files.items():
        (directory / name).write_text(text)
    return (load_kbs_config(directory / "kbs-config.toml"), AsConfig.load(directory / "as-config.json"),
            RvpsConfig.load(directory / "rvps.json"))


# --- Compose -------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    broken = compose()
    broken["services"]["kbs"]["ports"] = "8080"
    assert not validator.is_valid(broken)  # the schema is really applied


def test_compose_services_ports_and_mounted_configs() -> None:
    services = compose()["services"]
    assert set(services) == {"kbs", "as", "rvps", "postgres"}
    assert services["kbs"]["ports"] == [f"{UPSTREAM_PORTS['kbs']}:{UPSTREAM_PORTS['kbs']}"]
    for name in ("as", "rvps"):
        assert services[name]["expose"] == [str(UPSTREAM_PORTS[name])]
        assert f"0.0.0.0:{UPSTREAM_PORTS[name]}" in services[name]["command"]
    for name in ("kbs", "as", "rvps"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        for volume in services[name]["volumes"]:
            source, target, _ = volume.split(":")
            assert (DEPLOY / source).is_file(), source
            assert target in services[name]["command"]


def test_compose_configs_load_with_our_loaders(tmp_path: Path) -> None:
    files = {name: (DEPLOY / "config" / name).read_text() for name in ("kbs-config.toml", "as-config.json", "rvps.json")}
    kbs, attestation, rvps = load_configs(tmp_path, files)
    assert [str(s.host) + f":{s.port}" for s in kbs.http_server.sockets] == ["0.0.0.0:8080"]
    assert kbs.attestation_service.as_addr == "http://as:50004"
    assert attestation.rvps.address == "rvps:50003"
    assert kbs.resource_plugin.kind == "KvStorage"
    for config in (kbs, attestation, rvps):
        assert config.storage.storage_type == "Postgres"
    secrets = {f"/run/secrets/{name}" for name in compose()["secrets"]}
    assert str(kbs.admin.identity_providers[0].public_key_path) in secrets
    assert {str(p) for p in kbs.attestation_token.trusted_certs_paths} <= secrets
    assert {str(attestation.signer.key_path), str(attestation.signer.cert_path)} <= secrets


def test_make_secrets_writes_every_file_compose_mounts(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    bindir = str(Path(sys.executable).parent)
    result = subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(out)], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{bindir}:/usr/bin:/bin", "PYTHON": sys.executable}, check=False)
    assert result.returncode == 0, result.stderr
    document = compose()
    for secret in document["secrets"].values():
        assert (out / Path(secret["file"]).name).is_file(), secret["file"]
    env_file = document["x-trustee-image"]["env_file"][0]
    (line,) = (out / Path(env_file).name).read_text().splitlines()
    assert re.fullmatch(r"POSTGRES_URL=postgresql://trustee:[A-Za-z0-9_-]+@postgres:5432/trustee", line), redact_url(line)
    assert "BEGIN CERTIFICATE" in (out / "token-cert-chain.pem").read_text()


def test_the_files_the_dockerfile_copies_build_every_service(tmp_path: Path) -> None:
    """`pip install .` in the image sees only the COPYed paths: build a wheel from exactly those (no network)."""
    context = tmp_path / "context"
    context.mkdir()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        for name in line.split()[1:-1] if line.startswith("COPY ") else []:
            path = DEPLOY.parent / name
            if path.is_dir():
                shutil.copytree(path, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy(path, context / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                             str(context)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("pytrustee-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    for script in ("kbs = kbs.__main__:main", "grpc-as = attestation_service.__main__:main", "rvps = rvps.__main__:main"):
        assert script in scripts
    assert {"attestation_service/policies/default_cpu.rego", "kbs/policies/default.rego", "trustee_pb/attestation_pb2.py"} <= names


# --- Kubernetes ----------------------------------------------------------------------


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_follows_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_schema_is_really_applied() -> None:
    deployment = by_kind("Deployment")["trustee-kbs"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_manifests_run_two_kbs_replicas_on_upstream_ports() -> None:
    deployments, services = by_kind("Deployment"), by_kind("Service")
    assert deployments["trustee-kbs"]["spec"]["replicas"] == 2
    assert "trustee-postgres" in by_kind("StatefulSet")
    for name, port in UPSTREAM_PORTS.items():
        assert services[f"trustee-{name}"]["spec"]["ports"][0]["port"] == port
        container = deployments[f"trustee-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"][0]["containerPort"] == port
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert env["POSTGRES_URL"] == {"name": "trustee-postgres", "key": "url"}


def mounted_files(deployment: dict[str, Any]) -> set[str]:
    """Every file path the container sees from its ConfigMap and Secret volumes."""
    pod = deployment["spec"]["template"]["spec"]
    configmaps, secrets = by_kind("ConfigMap"), by_kind("Secret")
    sources: dict[str, set[str]] = {}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            sources[volume["name"]] = set(configmaps[volume["configMap"]["name"]]["data"])
        else:
            sources[volume["name"]] = set(secrets[volume["secret"]["secretName"]]["stringData"])
    files = set()
    for mount in pod["containers"][0]["volumeMounts"]:
        files |= {f"{mount['mountPath']}/{key}" for key in sources[mount["name"]]}
    return files


def test_manifest_configs_load_and_name_mounted_files(tmp_path: Path) -> None:
    configmaps = by_kind("ConfigMap")
    files = {**configmaps["kbs-config"]["data"], **configmaps["as-config"]["data"], **configmaps["rvps-config"]["data"]}
    kbs, attestation, rvps = load_configs(tmp_path, files)
    deployments = by_kind("Deployment")
    kbs_files = mounted_files(deployments["trustee-kbs"])
    assert not kbs.http_server.insecure_http
    needed = [kbs.http_server.certificate, kbs.http_server.private_key, kbs.admin.identity_providers[0].public_key_path,
              *kbs.attestation_token.trusted_certs_paths]
    assert {str(p) for p in needed} <= kbs_files
    assert kbs.attestation_service.as_addr == "http://trustee-as:50004"
    assert kbs.resource_plugin.kind == "KvStorage"
    assert attestation.signer is not None
    assert {str(attestation.signer.key_path), str(attestation.signer.cert_path)} <= mounted_files(deployments["trustee-as"])
    assert attestation.rvps.address == "trustee-rvps:50003"
    for config in (kbs, attestation, rvps):
        assert config.storage.storage_type == "Postgres"
    for name, command_file in (("trustee-kbs", "kbs-config.toml"), ("trustee-as", "as-config.json"), ("trustee-rvps", "rvps.json")):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        (path,) = [arg for arg in container["command"] if arg.endswith(command_file)]
        assert path in mounted_files(deployments[name])
