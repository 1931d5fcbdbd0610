"""Attesters: produce TEE evidence over given report data.

`detect_attesters()` returns the primary attester (the first hardware TEE
found, else `sample`) and the additional device attesters, logging which
is in use. Hardware attesters: `tdx` (configfs-tsm), `snp` (configfs-tsm or
/dev/sev-guest), `tpm` (tpm2-pytss,
TCTI from `AA_TPM_TCTI` / `AA_TPM_DEVICE` / /dev/tpm*); sgx, Azure, ... are added
by later work behind the same `Attester` Protocol.
"""

from guest.attesters.base import Attester, InitDataBinder, RuntimeMeasurer, detect_attesters
from guest.attesters.sample import SampleAttester, SampleDeviceAttester
from guest.attesters.snp import SnpAttester, SnpPaths
from guest.attesters.tdx import TdxAttester, TdxPaths
from guest.attesters.tpm import TpmAttester, TpmSettings

__all__ = [
    "Attester",
    "InitDataBinder",
    "RuntimeMeasurer",
    "SampleAttester",
    "SampleDeviceAttester",
    "SnpAttester",
    "SnpPaths",
    "TdxAttester",
    "TdxPaths",
    "TpmAttester",
    "TpmSettings",
    "detect_attesters",
]
