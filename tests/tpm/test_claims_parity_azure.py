"""`az-snp-vtpm` and `az-tdx-vtpm` claims equal upstream's, claim by claim (docs/claims.md).

Upstream has no expected-claims file for them; its claims are a fixed
function of the evidence. az-snp-vtpm (`parse_tee_evidence_az` +
`extend_claim`): the guest policy ABI and flags, reported TCB and platform
flags **as strings**, `measurement` in standard base64, then `report_data`
= the vTPM quote nonce (hex), `init_data` = PCR 8 (hex), `tpm.pcrNN`.
az-tdx-vtpm: the tdx quote claims (`generate_parsed_claim`: header and
body fields hex, `td_attributes` flags, the PCK's `platform_instance_id`)
then the same `extend_claim`. The values were derived from the corpus
captures' bytes (SNP report at HCL offset 0x20 with the ABI offsets; TD
quote header and body offsets; the PCK extension's OCTET STRING reversed),
not by our verifier; `report_data` and `tpm.pcr00` are also the values
upstream's own tests assert for these captures.
"""

from __future__ import annotations

from typing import Any

import pytest
from attestation_service.core.verifiers.azure import AzSnpVtpmVerifier, AzTdxVtpmVerifier

from tests.claims_parity import assert_parity
from tests.tpm.corpus import AZ_REPORT_DATA, AZ_SNP_EVIDENCE, AZ_TDX_EVIDENCE, az_as_v0, load
from tests.tpm.test_azure_formats import AZ_NOW

Z48 = "00" * 48
#: Asserted by upstream's az-snp-vtpm / az-tdx-vtpm tests for these captures.
UPSTREAM_REPORT_DATA = "6368616c6c656e6765"  # "challenge"
UPSTREAM_SNP_PCR00 = "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
UPSTREAM_TDX_PCR00 = "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273"


def _extend(claims: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    pcrs = evidence["tpm_quote"]["pcrs"]
    return {**claims, "tpm": {f"pcr{i:02d}": p for i, p in enumerate(pcrs)}, "init_data": pcrs[8],
            "report_data": UPSTREAM_REPORT_DATA}


def upstream_snp(evidence: dict[str, Any]) -> dict[str, Any]:
    return _extend({
        "policy_abi_major": "0", "policy_abi_minor": "31", "policy_smt_allowed": "true", "policy_migrate_ma": "false",
        "policy_debug_allowed": "false", "policy_single_socket": "false",
        "reported_tcb_bootloader": "4", "reported_tcb_tee": "0", "reported_tcb_snp": "24", "reported_tcb_microcode": "219",
        "platform_tsme_enabled": "false", "platform_smt_enabled": "true",
        "measurement": "agY76d159jcchC5ID43DtccllhNE5XEw6Ixa30no9/bHm3Wl63f8dplZ9K6y+UAe",
    }, evidence)


def upstream_tdx(evidence: dict[str, Any]) -> dict[str, Any]:
    return _extend({
        "quote": {
            "header": {
                "version": "0400", "att_key_type": "0200", "tee_type": "81000000", "reserved": "00000000",
                "vendor_id": "939a7233f79c4ca9940a0db3957f0607", "user_data": "f17eac112e4cd9a0fafce1b46b5af18f00000000",
            },
            "body": {
                "tcb_svn": "02010600000000000000000000000000",
                "mr_seam": "360304d34a16aace0a18e09ad2d07d2b9fd3c174378e5bf108388079827f89ff62acc5f8c473dd40706324834e202946",
                "mrsigner_seam": Z48, "seam_attributes": "0000000000000000", "td_attributes": "0000000000000000",
                "xfam": "e718060000000000",
                "mr_td": "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b",
                "mr_config_id": Z48, "mr_owner": Z48, "mr_owner_config": Z48,
                "rtmr_0": Z48, "rtmr_1": Z48, "rtmr_2": Z48, "rtmr_3": Z48,
                "report_data": "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839" + "00" * 32,
            },
        },
        "td_attributes": {"debug": False, "key_locker": False, "perfmon": False, "protection_keys": False, "septve_disable": False},
        "platform_instance_id": "ffa7dfed7d49193bcdcc6868ffdca52c",
    }, evidence)


CASES = [
    ("az-snp-vtpm", AZ_SNP_EVIDENCE, AzSnpVtpmVerifier, upstream_snp, UPSTREAM_SNP_PCR00),
    ("az-tdx-vtpm", AZ_TDX_EVIDENCE, AzTdxVtpmVerifier, upstream_tdx, UPSTREAM_TDX_PCR00),
]


@pytest.mark.parametrize(("tee", "path", "verifier", "upstream", "pcr00"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["v1", "v0"])
def test_claims_equal_upstreams(tee: str, path: Any, verifier: Any, upstream: Any, pcr00: str, layout: str) -> None:
    evidence = load(path)
    wire = evidence if layout == "v1" else az_as_v0(evidence, tee)
    [(claims, tee_class)] = verifier().evaluate(wire, AZ_REPORT_DATA, None, AZ_NOW)
    assert tee_class == "cpu"
    expected = upstream(evidence)
    assert expected["tpm"]["pcr00"] == pcr00
    assert_parity(tee, claims, expected)
