"""The `Attester` Protocol, its optional capabilities, and TEE detection.

Capabilities beyond evidence are separate Protocols that an attester
implements only when its platform has them: `InitDataBinder` (compare or
extend the init-data digest, e.g. TDX MRCONFIGID, TPM PCR 8) and
`RuntimeMeasurer` (extend a runtime measurement register). The AA checks
them with `isinstance`; the sample attesters implement neither.
`TeeKeyCertifier` (tpm) makes the TEE key inside the platform and certifies
it in the evidence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from trustee_common.jose import TeeKeyPair

logger = logging.getLogger(__name__)


class Attester(Protocol):
    #: TEE name as in kbs-types (`sample`, `tdx`, ...).
    tee: str

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        """Evidence JSON object binding `report_data` (the raw digest bytes)."""


@runtime_checkable
class InitDataBinder(Protocol):
    def bind_init_data(self, digest: bytes) -> None:
        """Bind `digest` to the platform; raise a `TrusteeError` if it does not match."""


@runtime_checkable
class TeeKeyCertifier(Protocol):
    """An attester that can hold the TEE key itself and certify it in its evidence (tpm: docs/tpm-bound-keys.md)."""

    def create_tee_key(self) -> TeeKeyPair | None:
        """A platform-resident TEE key pair, or None when the platform cannot make one."""

    def get_evidence_for_key(self, report_data: bytes, key_pair: TeeKeyPair | None) -> dict[str, Any]:
        """`get_evidence`, plus the platform's certification of `key_pair` when it is one of its keys."""


@runtime_checkable
class RuntimeMeasurer(Protocol):
    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        """Extend register `register_index` with `event_digest`."""


def detect_attesters(environ: Mapping[str, str] | None = None) -> tuple[Attester, list[Attester]]:
    """Primary attester and device attesters for this machine.

    Upstream's order is tdx, sgx, az-tdx-vtpm, az-snp-vtpm, snp, csv, cca,
    se, tpm, then `sample` with a loud warning; this build knows tdx (a
    configfs-tsm report entry with provider `tdx_guest`, or /dev/tdx_guest;
    paths from `TdxPaths.from_env`), snp (/sys/devices/platform/sev-guest, or a
    configfs-tsm report entry with provider `sev_guest`; `SnpPaths.from_env`), tpm (`AA_TPM_TCTI`, `AA_TPM_DEVICE` or a
    /dev/tpm* device; `TpmSettings.from_env`) and sample. The sample device is added
    when `ENABLE_SAMPLE_DEVICE` is set, as upstream.
    """
    from guest.attesters.sample import SampleAttester, SampleDeviceAttester
    from guest.attesters.snp import SnpAttester, SnpPaths, detect_snp
    from guest.attesters.tdx import TdxAttester, TdxPaths, detect_tdx
    from guest.attesters.tpm import TpmAttester, detect_tpm

    env = os.environ if environ is None else environ
    primary: Attester
    tdx_paths = TdxPaths.from_env(env)
    tdx_reason = detect_tdx(tdx_paths)
    if tdx_reason is not None:
        primary = TdxAttester(tdx_paths)
        logger.info("TDX guest detected (%s): using the tdx attester", tdx_reason)
    elif (snp_reason := detect_snp(snp_paths := SnpPaths.from_env(env))) is not None:
        primary = SnpAttester(snp_paths)
        logger.info("SEV-SNP guest detected (%s): using the snp attester", snp_reason)
    elif (tpm_settings := detect_tpm(env)) is not None:
        primary = TpmAttester(tpm_settings)
        logger.info("TPM detected (TCTI %s): using the tpm attester", tpm_settings.tcti)
    else:
        primary = SampleAttester()
        logger.warning("no hardware TEE detected: using the sample attester (evidence is NOT trustworthy)")
    devices: list[Attester] = []
    if env.get("ENABLE_SAMPLE_DEVICE"):
        devices.append(SampleDeviceAttester())
        logger.info("additional attester in use: sampledevice")
    return primary, devices
