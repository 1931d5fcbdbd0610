"""The default EAR policies shipped with the service (`default_cpu.rego`, `default_gpu.rego`)."""

from __future__ import annotations

from importlib import resources

DEFAULT_POLICY_IDS = ("default_cpu", "default_gpu")


def default_policies() -> dict[str, str]:
    """`{policy id: Rego text}` of every shipped default."""
    folder = resources.files(__name__)
    return {pid: folder.joinpath(f"{pid}.rego").read_text(encoding="utf-8") for pid in DEFAULT_POLICY_IDS}
