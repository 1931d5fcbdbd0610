"""Claims of a verified SNP report: upstream's names (trustee-server.md 8.3) plus this project's extras.

Upstream: `policy_abi_major`, `policy_abi_minor`, `policy_smt_allowed`,
`policy_migrate_ma`, `policy_debug_allowed`, `policy_single_socket`,
`reported_tcb_{bootloader,tee,snp,microcode}`, `platform_tsme_enabled`,
`platform_smt_enabled`, `measurement`, `report_data`, `init_data` (host_data),
`chip_id` (hex; integers and booleans as JSON numbers and booleans).
Added: `vmpl` (the default policy requires 0), `version`, `guest_svn`, the
remaining policy and platform bits, the other TCBs (`*_tcb_*`, `fmc` on
Turin), digests and ids in hex, `signing_key` (`VCEK`/`VLEK`) and `product`.
"""

from __future__ import annotations

from typing import Any

from attestation_service.core.verifiers.snp.report import SnpReport, TcbVersion

POLICY_BITS = {
    "smt_allowed": 16, "migrate_ma": 18, "debug_allowed": 19, "single_socket": 20, "cxl_allowed": 21,
    "mem_aes_256_xts": 22, "rapl_dis": 23, "ciphertext_hiding": 24, "page_swap_disabled": 25,
}
PLATFORM_BITS = {
    "smt_enabled": 0, "tsme_enabled": 1, "ecc_enabled": 2, "rapl_disabled": 3, "ciphertext_hiding_enabled": 4,
    "alias_check_complete": 5, "tio_enabled": 7,
}


def _tcb(prefix: str, tcb: TcbVersion) -> dict[str, int]:
    claims = {f"{prefix}_bootloader": tcb.bootloader, f"{prefix}_tee": tcb.tee, f"{prefix}_snp": tcb.snp,
              f"{prefix}_microcode": tcb.microcode}
    if tcb.fmc is not None:
        claims[f"{prefix}_fmc"] = tcb.fmc
    return claims


def report_claims(report: SnpReport, product: str | None, signing_key: str) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "vmpl": report.vmpl,
        "policy_abi_major": report.policy >> 8 & 0xFF,
        "policy_abi_minor": report.policy & 0xFF,
    }
    claims.update({f"policy_{name}": bool(report.policy >> bit & 1) for name, bit in POLICY_BITS.items()})
    claims.update({f"platform_{name}": bool(report.platform_info >> bit & 1) for name, bit in PLATFORM_BITS.items()})
    for prefix, tcb in (("reported_tcb", report.reported_tcb), ("current_tcb", report.current_tcb),
                        ("committed_tcb", report.committed_tcb), ("launch_tcb", report.launch_tcb)):
        claims.update(_tcb(prefix, tcb))
    claims.update({
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "init_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "author_key_en": bool(report.signer_info & 1),
        "mask_chip_key": bool(report.signer_info >> 1 & 1),
        "signing_key": signing_key,
        "product": product,
        "current_version": "{}.{}.{}".format(*report.current_version),
        "committed_version": "{}.{}.{}".format(*report.committed_version),
    })
    if report.launch_mit_vector is not None:
        claims["launch_mit_vector"] = report.launch_mit_vector
        claims["current_mit_vector"] = report.current_mit_vector
    return claims
