"""The `sample` and `sampledevice` attesters: no hardware, for development.

Evidence is `{"svn": "1", "report_data": <standard base64 of the exact
report data>}` (not padded; guest-components.md 3.5); the device variant
reports svn "2".

Once an init-data digest is bound (`bind_init_data`, at AA start-up from
`--initdata-toml`), the `sample` evidence also carries it as `init_data`
(standard base64), the way a TDX quote carries MRCONFIGID: the AS checks
it against the init-data sent with the evidence. Upstream's sample
attester binds nothing and its verifier ignores the extra field. Like a
launch-time register, the digest is bound once; a different one later is
refused.
"""

from __future__ import annotations

from typing import Any

from trustee_common.b64 import std_encode
from trustee_common.errors import AttestationError


class SampleDeviceAttester:
    """The device variant: evidence only (a device binds no init-data; the primary TEE does)."""

    tee = "sampledevice"
    svn = "2"

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        return {"svn": self.svn, "report_data": std_encode(report_data)}


class SampleAttester(SampleDeviceAttester):
    """The primary sample TEE: the device's evidence, plus the bound init-data digest."""

    tee = "sample"
    svn = "1"

    def __init__(self) -> None:
        self.init_data_digest: bytes | None = None

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        evidence = super().get_evidence(report_data)
        if self.init_data_digest is not None:
            evidence["init_data"] = std_encode(self.init_data_digest)
        return evidence

    def bind_init_data(self, digest: bytes) -> None:
        if self.init_data_digest is not None and self.init_data_digest != digest:
            raise AttestationError("sample attester: a different init-data digest is already bound")
        self.init_data_digest = digest
