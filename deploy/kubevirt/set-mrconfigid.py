#!/usr/bin/env python3
"""KubeVirt onDefineDomain hook: put the init-data digest in the TD's MRCONFIGID.

KubeVirt's API (v1.9: `spec.domain.launchSecurity.tdx: {}`) has no field for
MRCONFIGID, while libvirt's `<launchSecurity type='tdx'>` takes
`<mrConfigId>` (base64 of 48 bytes, passed on to QEMU's tdx-guest
`mrconfigid`). KubeVirt's sidecar-shim runs this script as
`onDefineDomain --vmi <VMI JSON> --domain <domain XML>` and uses what it prints
as the domain XML. The value comes from the VMI annotation
`trustee/mr-config-id`, which holds `trustee initdata digest --tee tdx
--encoding base64 initdata.toml`.

Fails closed: without the annotation, with a value that is not base64 of 48
bytes, on a domain that is not a TD, or with a different mrConfigId already
set, it exits 1 and KubeVirt does not start the VM. Python 3.9 standard
library only (the sidecar-shim image's interpreter). Kept byte-identical to the
`set-mrconfigid.py` key of the ConfigMap in vm-tdx.yaml (tests/kubevirt checks).
"""

import argparse
import base64
import binascii
import json
import sys
import xml.etree.ElementTree as ET

ANNOTATION = "trustee/mr-config-id"
MR_CONFIG_ID_SIZE = 48
#: Namespaces KubeVirt's domain XML may use; registered so they keep their prefixes.
NAMESPACES = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}


def fail(message):
    print(f"set-mrconfigid: {message}", file=sys.stderr)
    sys.exit(1)


def mr_config_id(vmi):
    annotations = (vmi.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION)
    if not isinstance(value, str):
        fail(f"the VMI has no {ANNOTATION} annotation (trustee initdata digest --tee tdx --encoding base64 FILE)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        fail(f"{ANNOTATION} is not standard base64")
    if len(raw) != MR_CONFIG_ID_SIZE:
        fail(f"{ANNOTATION} decodes to {len(raw)} bytes, MRCONFIGID takes {MR_CONFIG_ID_SIZE}")
    return base64.b64encode(raw).decode("ascii")


def set_mr_config_id(domain_xml, value):
    for prefix, uri in NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    try:
        domain = ET.fromstring(domain_xml)  # noqa: S314 - virt-launcher's own domain XML; the shim image has no defusedxml
    except ET.ParseError as exc:
        fail(f"the domain XML does not parse: {exc}")
    launch = domain.find("launchSecurity")
    if launch is None or launch.get("type") != "tdx":
        fail("the domain has no <launchSecurity type='tdx'> (set spec.domain.launchSecurity.tdx: {})")
    existing = launch.find("mrConfigId")
    if existing is not None:
        if (existing.text or "").strip() != value:
            fail("the domain already has another mrConfigId")
        return ET.tostring(domain, encoding="unicode")
    element = ET.Element("mrConfigId")
    element.text = value
    # libvirt's order: policy, mrConfigId, mrOwner, mrOwnerConfig, quoteGenerationService.
    position = 1 if len(launch) and next(iter(launch)).tag == "policy" else 0
    launch.insert(position, element)
    return ET.tostring(domain, encoding="unicode")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="onDefineDomain")
    parser.add_argument("--vmi", required=True)
    parser.add_argument("--domain", required=True)
    args, _ = parser.parse_known_args(argv)
    try:
        vmi = json.loads(args.vmi)
    except ValueError:
        fail("--vmi is not JSON")
    if not isinstance(vmi, dict):
        fail("--vmi is not a JSON object")
    sys.stdout.write(set_mr_config_id(args.domain, mr_config_id(vmi)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
