"""`sample` (class cpu) and `sampledevice` (class gpu): development TEEs, no hardware.

Evidence is `{"svn": str, "report_data": <standard padded base64>}`. The
decoded report data must equal the expected digest exactly; nothing is
signed, so these verifiers prove nothing about a platform and exist for
tests and development (trustee-server.md 8.2, 8.3).
"""

from __future__ import annotations

import datetime
import hmac
from typing import Any

from attestation_service.core.verifier import Claims
from trustee_common.b64 import std_decode, std_encode
from trustee_common.errors import EvidenceError, MalformedRequestError

LAUNCH_DIGEST = "abcde"
PLATFORM_VERSION = {"major": 1, "minor": 4}


def _parse(evidence: object, tee: str) -> tuple[str, str, bytes]:
    if not isinstance(evidence, dict):
        raise MalformedRequestError(f"evidence ({tee}): must be a JSON object")
    svn, report_data = evidence.get("svn"), evidence.get("report_data")
    if not isinstance(svn, str):
        raise MalformedRequestError(f"evidence ({tee}): field 'svn' is missing or not a string")
    if not isinstance(report_data, str):
        raise MalformedRequestError(f"evidence ({tee}): field 'report_data' is missing or not a string")
    return svn, report_data, std_decode(report_data, f"evidence ({tee}) report_data")


def _check_report_data(actual: bytes, expected: bytes | None) -> None:
    if expected is not None and not hmac.compare_digest(actual, expected):
        raise EvidenceError("report data does not match")


class SampleVerifier:
    tee = "sample"

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        svn, report_data, actual = _parse(evidence, self.tee)
        _check_report_data(actual, expected_report_data)
        claims: dict[str, Any] = {
            "svn": svn,
            "report_data": report_data,
            "launch_digest": LAUNCH_DIGEST,
            "platform_version": dict(PLATFORM_VERSION),
            "debug": False,
        }
        if expected_init_data_hash is not None:
            claims["init_data"] = std_encode(expected_init_data_hash)
        return [(claims, "cpu")]


class SampleDeviceVerifier:
    tee = "sampledevice"

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        svn, report_data, actual = _parse(evidence, self.tee)
        _check_report_data(actual, expected_report_data)
        return [({"svn": svn, "report_data": report_data}, "gpu")]
