"""TCG event types and digest algorithms: numbers, upstream names, sizes.

Names are the ones Trustee's `uefi_event_logs` claims use (`type_name`,
`digests[].alg`); values come from the TCG PC Client Platform Firmware
Profile (evidence.md 4.5). Pure data.
"""

from __future__ import annotations

import hashlib

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_EVENT_TAG = 0x6
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003

EVENT_TYPE_NAMES: dict[int, str] = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_SM3 = 0x0012

#: TCG algorithm id -> (claim name, hashlib name, digest size)
ALGORITHMS: dict[int, tuple[str, str, int]] = {
    ALG_SHA1: ("SHA-1", "sha1", 20),
    ALG_SHA256: ("SHA-256", "sha256", 32),
    ALG_SHA384: ("SHA-384", "sha384", 48),
    ALG_SHA512: ("SHA-512", "sha512", 64),
    ALG_SM3: ("SM3", "sm3", 32),
}


def event_type_name(event_type: int) -> str:
    """Upstream's name, or `EV_UNKNOWN_0x........` for a type the TCG tables do not list."""
    return EVENT_TYPE_NAMES.get(event_type, f"EV_UNKNOWN_{event_type:#010x}")


def algorithm_name(alg_id: int) -> str:
    known = ALGORITHMS.get(alg_id)
    return known[0] if known else f"{alg_id:#06x}"


def hash_with(alg_id: int, data: bytes) -> bytes | None:
    """`H_alg(data)`, or None when this build cannot compute that algorithm."""
    known = ALGORITHMS.get(alg_id)
    if known is None or known[1] not in hashlib.algorithms_available:
        return None
    return hashlib.new(known[1], data).digest()
