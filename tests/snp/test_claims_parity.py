"""`snp` claims equal upstream's, claim by claim (docs/claims.md lists the deliberate differences).

Upstream has no expected-claims file for SNP; its claims are a fixed
function of the report (`parse_tee_evidence`: the guest policy ABI and four
flags, the reported TCB, two platform flags as numbers and booleans;
measurement, report_data, host_data as `init_data` and chip_id in hex). The
values below were derived from the corpus reports' bytes at the ABI offsets
(policy @0x08, platform_info @0x40, report_data @0x50, measurement @0x90,
host_data @0xC0, reported_tcb @0x180, chip_id @0x1A0), not by our verifier.
"""

from __future__ import annotations

from typing import Any

import pytest
from attestation_service.core.verifiers.snp import evaluate_snp_report

from tests.claims_parity import assert_parity, documented, flatten, parity_problems
from tests.snp.corpus import GENOA, VLEK, Case
from tests.snp.test_verify import request


def _upstream(tcb: tuple[int, int, int, int], tsme: bool, measurement: str, report_data: str, chip_id: str) -> dict[str, Any]:
    bootloader, tee, snp, microcode = tcb
    return {
        "policy_abi_major": 0, "policy_abi_minor": 0, "policy_smt_allowed": True, "policy_migrate_ma": False,
        "policy_debug_allowed": False, "policy_single_socket": False,
        "reported_tcb_bootloader": bootloader, "reported_tcb_tee": tee, "reported_tcb_snp": snp,
        "reported_tcb_microcode": microcode,
        "platform_tsme_enabled": tsme, "platform_smt_enabled": True,
        "measurement": measurement, "report_data": report_data, "init_data": "00" * 32, "chip_id": chip_id,
    }


UPSTREAM = {
    "trustee-genoa-e2e": _upstream(
        (10, 0, 23, 25), False,
        "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e",
        "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf9"
        "29eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0",
        "371c55d6d15cb50f16dc31d39a24e300caaabff4431e841111429b73ec45ad67"
        "ea6e687ffae7bf84b54a5d0e6d79b3ef6ff0bd8b4cff94c2163af5c5de8718e8",
    ),
    "trustee-vlek": _upstream(
        (4, 0, 24, 217), True,
        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0",
        "819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd5"
        "4e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca",
        "00" * 64,
    ),
}


def claims_of(case: Case) -> dict[str, Any]:
    result = evaluate_snp_report(request(case))
    assert result.claims is not None, result.error
    return result.claims


@pytest.mark.parametrize("case", [GENOA, VLEK], ids=lambda c: c.name)
def test_claims_equal_upstreams(case: Case) -> None:
    assert_parity("snp", claims_of(case), UPSTREAM[case.name])


def test_every_documented_extra_is_emitted() -> None:
    # The table must not list claims we no longer emit (Turin's fmc and v5 mitigation vectors aside).
    emitted = set(flatten(claims_of(GENOA)))
    for pattern in documented("snp")["added"]:
        if pattern in ("reported_tcb_fmc", "launch_mit_vector", "current_mit_vector"):
            continue
        assert any(name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])) for name in emitted), pattern


def test_a_changed_value_is_caught() -> None:
    ours = claims_of(GENOA)
    ours["policy_abi_minor"] = str(ours["policy_abi_minor"])  # "0" is not 0
    assert parity_problems("snp", ours, UPSTREAM["trustee-genoa-e2e"]) == ['policy_abi_minor: ours "0" != upstream 0']
