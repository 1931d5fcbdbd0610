"""Package discovery for the multi-root layout.

`pyproject.toml` holds the metadata. This file only maps the top-level
folders onto import packages: `as/` holds `attestation_service` (`as` is a
Python keyword) and `tools/` holds one package per command-line tool.
"""

from setuptools import find_packages, setup

ROOT_PACKAGES = ["trustee_common", "trustee_pb", "kbs", "rvps", "guest"]
MAPPED_ROOTS = {"as": ["attestation_service"], "tools": ["kbs_client", "rvps_tool", "trustee_cli", "clevis_trustee"]}

packages = find_packages(include=[f"{name}*" for name in ROOT_PACKAGES])
package_dir: dict[str, str] = {}
for folder, names in MAPPED_ROOTS.items():
    for name in names:
        package_dir[name] = f"{folder}/{name}"
        packages += find_packages(folder, include=[f"{name}*"])

setup(packages=packages, package_dir=package_dir)
