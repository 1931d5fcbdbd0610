"""The `tdx` rules of default_cpu (trustee-server.md 6.6) on claims shaped like the DCAP verifier's output."""

from __future__ import annotations

import copy
import hashlib
import struct
from typing import Any

import pytest
from attestation_service.core.appraisal import status, trust_vector
from attestation_service.core.eventlog import parse_event_log
from attestation_service.core.policy import policy_spec
from attestation_service.policies import default_policies

from trustee_common.rego import RegoPolicy

from .builders import SHA384, agile_log, event2

BODY = 48  # TD quote v4 body offset (evidence.md 1.2)
KERNEL_PATH = "VenMedia(1428F772-B64A-441E-B8C3-9EBDD7F893C7,)"
KERNEL_DIGEST = hashlib.sha384(b"the kernel image").hexdigest()
PARAMS_DIGEST = hashlib.sha384(b"console=hvc0 root=/dev/vda1").hexdigest()


@pytest.fixture(scope="module")
def policy() -> RegoPolicy:
    return RegoPolicy.from_spec(policy_spec(default_policies()["default_cpu"]))


def _field(quote: bytes, offset: int, size: int) -> str:
    return quote[BODY + offset : BODY + offset + size].hex()


def quote_claims(quote: bytes) -> dict[str, Any]:
    """The `quote` claim of a v4 quote, named as in trustee-server.md 8.3 (hex strings)."""
    header = {
        "version": quote[0:2].hex(),
        "att_key_type": quote[2:4].hex(),
        "tee_type": quote[4:8].hex(),
        "reserved": quote[8:12].hex(),
        "vendor_id": quote[12:28].hex(),
        "user_data": quote[28:48].hex(),
    }
    names = [
        ("tcb_svn", 0, 16), ("mr_seam", 16, 48), ("mrsigner_seam", 64, 48), ("seam_attributes", 112, 8),
        ("td_attributes", 120, 8), ("xfam", 128, 8), ("mr_td", 136, 48), ("mr_config_id", 184, 48),
        ("mr_owner", 232, 48), ("mr_owner_config", 280, 48), ("rtmr_0", 328, 48), ("rtmr_1", 376, 48),
        ("rtmr_2", 424, 48), ("rtmr_3", 472, 48), ("report_data", 520, 64),
    ]  # fmt: skip
    return {"header": header, "body": {name: _field(quote, off, size) for name, off, size in names}}


def direct_boot_log() -> bytes:
    """A small OVMF direct-boot log: the kernel (File(kernel)) and its command line (LoadOptions tag)."""
    vendor = struct.pack("<BBH", 4, 3, 20) + bytes.fromhex("72f728144ab61e44b8c39ebdd7f893c7")
    name = "kernel\x00".encode("utf-16-le")
    path = vendor + struct.pack("<BBH", 4, 4, 4 + len(name)) + name + bytes([0x7F, 0xFF, 4, 0])
    image = struct.pack("<QQQQ", 0x7CB30000, 0xA5A200, 0, len(path)) + path
    options = b"LOADED_IMAGE::LoadOptions\x00"
    tag = struct.pack("<II", 0x8F3B22ED, len(options)) + options
    return agile_log(
        event2(2, 0x80000003, image, [(SHA384, bytes.fromhex(KERNEL_DIGEST))]),
        event2(3, 0x6, tag, [(SHA384, bytes.fromhex(PARAMS_DIGEST))]),
    )


def tdx_claims(quote: bytes, log: bytes, *, debug: bool = False) -> dict[str, Any]:
    return {
        "quote": quote_claims(quote),
        "td_attributes": {"debug": debug, "key_locker": False, "perfmon": False, "protection_keys": False, "septve_disable": True},
        "tcb_status": "UpToDate",
        "collateral_expiration_status": "0",
        "uefi_event_logs": parse_event_log(log).to_claims(),
    }


def all_reference_values(claims: dict[str, Any]) -> dict[str, Any]:
    body = claims["quote"]["body"]
    return {
        "mr_td": [body["mr_td"]],
        "xfam": [body["xfam"]],
        "rtmr_1": [body["rtmr_1"]],
        "rtmr_2": [body["rtmr_2"]],
        "tdvfkernel": KERNEL_DIGEST,
        "tdvfkernelparams": PARAMS_DIGEST,
    }


def appraise(policy: RegoPolicy, claims: dict[str, Any], rvs: dict[str, Any]) -> tuple[dict[str, int], str]:
    result = policy.evaluate({"tdx": claims}, {"reference_values": rvs} if rvs else {})
    vector = trust_vector(result.get("trust_claims"), "default_cpu")
    return vector, status(vector)


@pytest.fixture(scope="module")
def gcp_quote() -> bytes:
    from .conftest import corpus_file

    return corpus_file("quote.bin")


def _scores(vector: dict[str, int]) -> tuple[int, int, int]:
    return vector["hardware"], vector["executables"], vector["configuration"]


def test_up_to_date_non_debug_td_with_all_reference_values_is_affirming(policy: RegoPolicy, gcp_quote: bytes) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    vector, ear_status = appraise(policy, claims, all_reference_values(claims))
    assert _scores(vector) == (2, 3, 2)
    assert ear_status == "affirming"


def test_debug_td_is_not_configuration_affirmed(policy: RegoPolicy, gcp_quote: bytes) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log(), debug=True)
    vector, ear_status = appraise(policy, claims, all_reference_values(claims))
    assert _scores(vector) == (2, 3, 96)
    assert ear_status == "contraindicated"


def test_debug_td_without_reference_values_is_contraindicated_by_configuration(policy: RegoPolicy, gcp_quote: bytes) -> None:
    vector, _ = appraise(policy, tdx_claims(gcp_quote, direct_boot_log(), debug=True), {})
    assert vector["configuration"] == 96


def test_no_reference_values_is_contraindicated(policy: RegoPolicy, gcp_quote: bytes) -> None:
    vector, ear_status = appraise(policy, tdx_claims(gcp_quote, direct_boot_log()), {})
    assert _scores(vector) == (97, 33, 36)
    assert ear_status == "contraindicated"


def test_real_grub_boot_log_gets_executables_4(policy: RegoPolicy, gcp_quote: bytes, gcp_log: bytes) -> None:
    claims = tdx_claims(gcp_quote, gcp_log)
    vector, ear_status = appraise(policy, claims, all_reference_values(claims))
    assert _scores(vector) == (2, 4, 2)
    assert ear_status == "affirming"


@pytest.mark.parametrize("wrong", ["tdvfkernel", "tdvfkernelparams"])
def test_a_kernel_or_cmdline_mismatch_falls_back_to_4(policy: RegoPolicy, gcp_quote: bytes, wrong: str) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    rvs = all_reference_values(claims) | {wrong: "00" * 48}
    assert _scores(appraise(policy, claims, rvs)[0]) == (2, 4, 2)


@pytest.mark.parametrize("rv", ["rtmr_1", "rtmr_2"])
def test_an_rtmr_mismatch_leaves_executables_33(policy: RegoPolicy, gcp_quote: bytes, rv: str) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    rvs = all_reference_values(claims) | {rv: ["00" * 48]}
    assert _scores(appraise(policy, claims, rvs)[0]) == (2, 33, 2)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tcb_status",), "OutOfDate"),
        (("collateral_expiration_status",), "1"),
        (("quote", "header", "tee_type"), "00000000"),
        (("quote", "header", "vendor_id"), "00" * 16),
        (("quote", "body", "mr_td"), "11" * 48),
    ],
)
def test_hardware_needs_every_platform_check(policy: RegoPolicy, gcp_quote: bytes, path: tuple[str, ...], value: str) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    rvs = all_reference_values(claims)
    changed = copy.deepcopy(claims)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    vector, ear_status = appraise(policy, changed, rvs)
    assert vector["hardware"] == 97
    assert ear_status == "contraindicated"


def test_xfam_not_in_reference_values_is_not_configuration_affirmed(policy: RegoPolicy, gcp_quote: bytes) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    rvs = all_reference_values(claims) | {"xfam": ["ffffffffffffffff"]}
    assert _scores(appraise(policy, claims, rvs)[0]) == (2, 3, 36)


def test_kernel_event_needs_the_file_kernel_node(policy: RegoPolicy, gcp_quote: bytes) -> None:
    claims = tdx_claims(gcp_quote, direct_boot_log())
    for event in claims["uefi_event_logs"]:
        if event["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION":
            assert event["details"]["device_paths"] == [KERNEL_PATH, "File(kernel)"]
            event["details"]["device_paths"] = [KERNEL_PATH, "File(grubx64.efi)"]
    assert _scores(appraise(policy, claims, all_reference_values(claims))[0]) == (2, 4, 2)
