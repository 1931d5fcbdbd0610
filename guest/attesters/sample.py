"""The `sample` and `sampledevice` attesters: no hardware, for development.

Evidence is `{"svn": "1", "report_data": <standard base64 of the exact
report data>}` (not padded; guest-components.md 3.5); the device variant
reports svn "2".
"""

from __future__ import annotations

from typing import Any

from trustee_common.b64 import std_encode


class SampleAttester:
    tee = "sample"
    svn = "1"

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        return {"svn": self.svn, "report_data": std_encode(report_data)}


class SampleDeviceAttester(SampleAttester):
    tee = "sampledevice"
    svn = "2"
