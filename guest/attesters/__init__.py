"""Attesters: produce TEE evidence over given report data.

`detect_attesters()` returns the primary attester (the first hardware TEE
found, else `sample`) and the additional device attesters, logging which
is in use. Hardware attesters: `tdx` (configfs-tsm); snp, tpm, ... are
added by later work behind the same `Attester` Protocol.
"""

from guest.attesters.base import Attester, InitDataBinder, RuntimeMeasurer, detect_attesters
from guest.attesters.sample import SampleAttester, SampleDeviceAttester
from guest.attesters.tdx import TdxAttester, TdxPaths

__all__ = [
    "Attester",
    "InitDataBinder",
    "RuntimeMeasurer",
    "SampleAttester",
    "SampleDeviceAttester",
    "TdxAttester",
    "TdxPaths",
    "detect_attesters",
]
