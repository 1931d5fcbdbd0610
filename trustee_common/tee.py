"""TEE names (kbs-types `Tee` serde names) and their attestation classes."""

from __future__ import annotations

from trustee_common.errors import MalformedRequestError, clip_repr

#: Every TEE name the KBS protocol knows, with the class its verifier reports
#: (`<policy id>_<class>` picks the policy; `<class><n>` names the submod).
TEE_CLASSES: dict[str, str] = {
    "az-snp-vtpm": "cpu",
    "az-tdx-vtpm": "cpu",
    "nvidia": "gpu",
    "sgx": "cpu",
    "snp": "cpu",
    "tdx": "cpu",
    "cca": "cpu",
    "csv": "cpu",
    "se": "cpu",
    "hygondcu": "dcu",
    "tpm": "cpu",
    "sample": "cpu",
    "sampledevice": "gpu",
    "nvidia-dpu": "nvidia-dpu",
}


def parse_tee(name: object, field: str = "tee") -> str:
    """Return `name` if it is a known TEE, else raise `MalformedRequestError`."""
    if not isinstance(name, str) or name not in TEE_CLASSES:
        raise MalformedRequestError(f"{field}: unknown TEE {clip_repr(name)}")
    return name
