"""`sample` (class cpu) and `sampledevice` (class gpu): development TEEs, no hardware.

Evidence is `{"svn": str, "report_data": <standard padded base64>}`. The
decoded report data must equal the expected digest exactly; nothing is
signed, so these verifiers prove nothing about a platform and exist for
tests and development (trustee-server.md 8.2, 8.3).

`sample` evidence may also carry `init_data` (standard base64), the digest
our sample attester bound at start-up; it must then equal the digest of
the init-data sent, as MRCONFIGID must on TDX. Without that field the
claim is upstream's: the digest of whatever init-data was sent, unchecked.
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


def _parse(evidence: object, tee: str) -> tuple[dict[str, Any], str, str, bytes]:
    if not isinstance(evidence, dict):
        raise MalformedRequestError(f"evidence ({tee}): must be a JSON object")
    svn, report_data = evidence.get("svn"), evidence.get("report_data")
    if not isinstance(svn, str):
        raise MalformedRequestError(f"evidence ({tee}): field 'svn' is missing or not a string")
    if not isinstance(report_data, str):
        raise MalformedRequestError(f"evidence ({tee}): field 'report_data' is missing or not a string")
    return evidence, svn, report_data, std_decode(report_data, f"evidence ({tee}) report_data")


def _bound_init_data(evidence: dict[str, Any], expected: bytes | None) -> str | None:
    """The evidence's `init_data` field, checked against the expected digest; None when absent."""
    if "init_data" not in evidence:
        return None
    bound = evidence["init_data"]
    if not isinstance(bound, str):
        raise MalformedRequestError("evidence (sample): field 'init_data' is not a string")
    digest = std_decode(bound, "evidence (sample) init_data")
    if expected is not None and not hmac.compare_digest(digest, expected):
        raise EvidenceError("init data does not match the digest bound in the sample evidence")
    return std_encode(digest)


def _check_report_data(actual: bytes, expected: bytes | None) -> None:
    if expected is not None and not hmac.compare_digest(actual, expected):
        raise EvidenceError("report data does not match")


class SampleVerifier:
    tee = "sample"

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        fields, svn, report_data, actual = _parse(evidence, self.tee)
        _check_report_data(actual, expected_report_data)
        bound = _bound_init_data(fields, expected_init_data_hash)
        claims: dict[str, Any] = {
            "svn": svn,
            "report_data": report_data,
            "launch_digest": LAUNCH_DIGEST,
            "platform_version": dict(PLATFORM_VERSION),
            "debug": False,
        }
        if bound is not None:
            claims["init_data"] = bound
        elif expected_init_data_hash is not None:
            claims["init_data"] = std_encode(expected_init_data_hash)
        return [(claims, "cpu")]


class SampleDeviceVerifier:
    tee = "sampledevice"

    def evaluate(
        self, evidence: object, expected_report_data: bytes | None, expected_init_data_hash: bytes | None, now: datetime.datetime
    ) -> list[tuple[Claims, str]]:
        _, svn, report_data, actual = _parse(evidence, self.tee)
        _check_report_data(actual, expected_report_data)
        return [({"svn": svn, "report_data": report_data}, "gpu")]
