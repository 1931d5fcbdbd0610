"""The `Attester` Protocol and TEE detection."""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Attester(Protocol):
    #: TEE name as in kbs-types (`sample`, `tdx`, ...).
    tee: str

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        """Evidence JSON object binding `report_data` (the raw digest bytes)."""


def detect_attesters(environ: dict[str, str] | None = None) -> tuple[Attester, list[Attester]]:
    """Primary attester and device attesters for this machine.

    Upstream's order is tdx, sgx, az-tdx-vtpm, az-snp-vtpm, snp, csv, cca,
    se, tpm, then `sample` with a loud warning. The sample device is
    added when `ENABLE_SAMPLE_DEVICE` is set, as upstream.
    """
    from guest.attesters.sample import SampleAttester, SampleDeviceAttester

    env = os.environ if environ is None else environ
    primary: Attester = SampleAttester()
    logger.warning("no hardware TEE detected: using the sample attester (evidence is NOT trustworthy)")
    devices: list[Attester] = []
    if env.get("ENABLE_SAMPLE_DEVICE"):
        devices.append(SampleDeviceAttester())
        logger.info("additional attester in use: sampledevice")
    return primary, devices
