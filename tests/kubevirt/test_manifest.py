"""deploy/kubevirt without a cluster: the TDX VirtualMachine, its MRCONFIGID hook and the init-data agree.

KubeVirt's CRDs ship no OpenAPI schema we can install offline (it is not on
PyPI; its swagger.json lives in the kubevirt/kubevirt repository), so the
VirtualMachine is checked structurally against what KubeVirt v1.9 accepts, as
read from its API types and admission webhook (docs/kubevirt-tdx.md, "What
KubeVirt offers"):

* `apiVersion: kubevirt.io/v1`, `kind: VirtualMachine`, a `runStrategy`;
* `spec.template.spec.domain.launchSecurity` is exactly `{"tdx": {}}`: one
  launch-security type, and v1.9's `TDX` type has no fields (no MRCONFIGID,
  no QGS: both come from elsewhere, see below);
* UEFI firmware (`firmware.bootloader.efi`, a mapping), `efi.persistent` not
  true, SMM not enabled, no NIC with a `bootOrder` (the webhook refuses each
  with TDX); every disk has a volume;
* field types: booleans are booleans, `cpu.cores` an integer, annotations strings.

The ConfigMap is validated against the Kubernetes schema (kubernetes-validate).
Then the three values that must agree: the annotation `trustee/mr-config-id`
equals `trustee initdata digest --tee tdx --encoding base64` of the bundled
initdata.toml; the cloud-init delivers that file byte for byte; the hook
(`set-mrconfigid.py`, byte-identical in the ConfigMap) run as KubeVirt's
sidecar-shim runs it puts exactly that value in libvirt's `<mrConfigId>`,
whose bytes pass the TDX verifier's init-data check for the same file. The
systemd unit's `--kbs-url` is the init-data's KBS, which `trustee guest`
accepts.
"""

from __future__ import annotations

import ast
import base64
import json
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from attestation_service.core.initdata import parse_init_data_toml
from attestation_service.core.verifiers.tdx import steps as tdx_steps
from trustee_cli.initdata import guest_init_data

from tests.procs import script

KUBEVIRT = Path(__file__).parents[2] / "deploy" / "kubevirt"
INIT_DATA = KUBEVIRT / "initdata.toml"
HOOK = KUBEVIRT / "set-mrconfigid.py"
ANNOTATION = "trustee/mr-config-id"
K8S_VERSION = "1.30.0"
RUN_STRATEGIES = {"Always", "RerunOnFailure", "Manual", "Halted", "Once", "WaitAsReceiver"}
QGS_DOMAIN = ('<domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"><name>default_tdx</name>'
              '<launchSecurity type="tdx"><quoteGenerationService path="/var/run/tdx-qgs/qgs.socket">'
              '</quoteGenerationService></launchSecurity><qemu:commandline><qemu:arg value="-no-hpet"/></qemu:commandline>'
              '</domain>')


def documents() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((KUBEVIRT / "vm-tdx.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def template() -> dict[str, Any]:
    spec: dict[str, Any] = documents()["VirtualMachine"]["spec"]["template"]
    return spec


def annotations() -> dict[str, str]:
    values: dict[str, str] = template()["metadata"]["annotations"]
    return values


def cloud_config() -> dict[str, Any]:
    volumes = {v["name"]: v for v in template()["spec"]["volumes"]}
    user_data = volumes["cloudinitdisk"]["cloudInitNoCloud"]["userData"]
    assert user_data.startswith("#cloud-config\n")
    config: dict[str, Any] = yaml.safe_load(user_data)
    return config


def printed_digest(encoding: str) -> str:
    result = subprocess.run([script("trustee"), "initdata", "digest", "--tee", "tdx", "--encoding", encoding, str(INIT_DATA)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_hook(vmi: dict[str, Any], domain: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOK), "--vmi", json.dumps(vmi), "--domain", domain],
                          capture_output=True, text=True, timeout=60, check=False)


# --- structure ----------------------------------------------------------------------------------------


def test_virtual_machine_structure() -> None:
    vm = documents()["VirtualMachine"]
    assert vm["apiVersion"] == "kubevirt.io/v1" and isinstance(vm["metadata"]["name"], str)
    assert vm["spec"]["runStrategy"] in RUN_STRATEGIES
    domain = template()["spec"]["domain"]
    assert domain["launchSecurity"] == {"tdx": {}}
    efi = domain["firmware"]["bootloader"]["efi"]
    assert isinstance(efi, dict) and all(isinstance(efi[k], bool) for k in ("persistent", "secureBoot") if k in efi)
    assert efi.get("persistent") is not True
    smm = domain.get("features", {}).get("smm")
    assert smm is None or smm.get("enabled") is False
    assert isinstance(domain["cpu"]["cores"], int) and isinstance(domain["memory"]["guest"], str)
    assert all("bootOrder" not in nic for nic in domain["devices"].get("interfaces", []))
    volumes = {v["name"] for v in template()["spec"]["volumes"]}
    assert {d["name"] for d in domain["devices"]["disks"]} <= volumes
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in annotations().items())


def test_the_structural_check_refuses_what_kubevirt_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    original = documents()
    for mutate in (lambda d: d["launchSecurity"].update(sev={}), lambda d: d["firmware"]["bootloader"]["efi"].update(persistent=True),
                   lambda d: d["features"]["smm"].update(enabled=True), lambda d: d.pop("firmware")):
        docs = json.loads(json.dumps(original))
        mutate(docs["VirtualMachine"]["spec"]["template"]["spec"]["domain"])
        monkeypatch.setattr(sys.modules[__name__], "documents", lambda docs=docs: docs)
        with pytest.raises((AssertionError, KeyError)):
            test_virtual_machine_structure()


def test_hook_sidecar_annotation_names_the_configmap_script() -> None:
    (sidecar,) = json.loads(annotations()["hooks.kubevirt.io/hookSidecars"])
    assert sidecar["args"] == ["--version", "v1alpha2"]
    config_map = documents()["ConfigMap"]
    assert sidecar["configMap"] == {"name": config_map["metadata"]["name"], "key": "set-mrconfigid.py",
                                    "hookPath": "/usr/bin/onDefineDomain"}
    assert config_map["data"]["set-mrconfigid.py"] == HOOK.read_text()


def test_configmap_follows_the_kubernetes_schema() -> None:
    kubernetes_validate.validate(documents()["ConfigMap"], K8S_VERSION, strict=True)


def test_kubevirt_cr_patch_enables_tdx_sidecars_and_qgs() -> None:
    patch = yaml.safe_load((KUBEVIRT / "kubevirt-cr-patch.yaml").read_text())["spec"]["configuration"]
    assert {"WorkloadEncryptionTDX", "Sidecar"} <= set(patch["developerConfiguration"]["featureGates"])
    attestation = patch["confidentialCompute"]["tdx"]["attestation"]
    assert attestation == {"qgsSocketPath": "/var/run/tdx-qgs/qgs.socket", "enforced": True}


# --- the init-data, the annotation, the hook and the verifier agree --------------------------------------------


def test_annotation_is_the_init_data_digest() -> None:
    assert annotations()[ANNOTATION] == printed_digest("base64")


def test_cloud_init_delivers_the_init_data_byte_for_byte() -> None:
    files = {f["path"]: f for f in cloud_config()["write_files"]}
    entry = files["/etc/trustee/initdata.toml"]
    assert entry["encoding"] == "b64"
    assert base64.b64decode(entry["content"], validate=True) == INIT_DATA.read_bytes()


def test_guest_unit_starts_trustee_guest_with_the_bound_kbs() -> None:
    files = {f["path"]: f for f in cloud_config()["write_files"]}
    unit = files["/etc/systemd/system/trustee-guest.service"]["content"]
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1] == "guest"
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert flags["--initdata-toml"] == "/etc/trustee/initdata.toml"
    bound = guest_init_data(INIT_DATA, flags["--kbs-url"], None)
    assert bound.kbs_url == flags["--kbs-url"] and bound.kbs_cert_pem and "BEGIN CERTIFICATE" in bound.kbs_cert_pem
    assert "trustee-guest.service" in " ".join(cloud_config()["runcmd"])


def test_hook_sets_mrconfigid_to_what_the_verifier_accepts() -> None:
    result = run_hook({"metadata": {"annotations": annotations()}}, QGS_DOMAIN)
    assert result.returncode == 0, result.stderr
    domain = ET.fromstring(result.stdout)  # noqa: S314 - the hook's output for our own input
    launch = domain.find("launchSecurity")
    assert launch is not None
    assert [child.tag for child in launch] == ["mrConfigId", "quoteGenerationService"]
    assert launch.findtext("mrConfigId") == annotations()[ANNOTATION]
    assert domain.find("{http://libvirt.org/schemas/domain/qemu/1.0}commandline") is not None
    assert "xmlns:qemu=" in result.stdout
    mr_config_id = base64.b64decode(launch.findtext("mrConfigId") or "")
    assert mr_config_id.hex() == printed_digest("hex")
    expected = parse_init_data_toml(INIT_DATA.read_text()).digest
    assert tdx_steps.check_binding(mr_config_id, expected, tdx_steps.INIT_DATA_SIZE) == "mr_config_id matches"


def test_hook_keeps_libvirt_order_after_policy() -> None:
    domain = QGS_DOMAIN.replace('<launchSecurity type="tdx">', '<launchSecurity type="tdx"><policy>0x10000000</policy>')
    result = run_hook({"metadata": {"annotations": annotations()}}, domain)
    assert result.returncode == 0, result.stderr
    launch = ET.fromstring(result.stdout).find("launchSecurity")  # noqa: S314 - as above
    assert launch is not None and [c.tag for c in launch] == ["policy", "mrConfigId", "quoteGenerationService"]


@pytest.mark.parametrize(
    ("vmi_annotations", "domain", "message"),
    [
        ({}, QGS_DOMAIN, "has no trustee/mr-config-id annotation"),
        ({ANNOTATION: "not base64!"}, QGS_DOMAIN, "is not standard base64"),
        ({ANNOTATION: base64.b64encode(bytes(32)).decode()}, QGS_DOMAIN, "decodes to 32 bytes"),
        ({ANNOTATION: base64.b64encode(bytes(48)).decode()}, "<domain><name>x</name></domain>", "no <launchSecurity type='tdx'>"),
        ({ANNOTATION: base64.b64encode(bytes(48)).decode()}, "<domain", "does not parse"),
        ({ANNOTATION: base64.b64encode(bytes(48)).decode()},
         QGS_DOMAIN.replace("<quoteGen", f"<mrConfigId>{base64.b64encode(b'x' * 48).decode()}</mrConfigId><quoteGen"),
         "already has another mrConfigId"),
    ],
)
def test_hook_fails_closed(vmi_annotations: dict[str, str], domain: str, message: str) -> None:
    result = run_hook({"metadata": {"annotations": vmi_annotations}}, domain)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr


def test_hook_runs_on_the_sidecar_shim_python() -> None:
    """The sidecar-shim image (CentOS Stream 9) has Python 3.9: the script must parse as 3.9 and use the stdlib only."""
    tree = ast.parse(HOOK.read_text(), feature_version=(3, 9))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names)
