"""`tdx` claims equal upstream's, claim by claim (docs/claims.md lists the deliberate differences).

The debug-TD quote of the corpus is upstream's `tdx_quote_4.dat`; upstream's
`parse_tdx_claims_expected.json` holds the claims upstream derives from it.
Its values are carried over below as facts about that quote (the event-log
part is left out: it comes from a CCEL capture the corpus does not hold).
The platform instance ID is checked independently too: the PCK's OCTET
STRING read as a little-endian integer and printed big-endian.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from attestation_service.core.verifiers.tdx import TdxVerificationInput, evaluate_tdx_quote

from tests.claims_parity import assert_parity, documented, flatten
from tests.tdx.corpus import DEBUG_TD, V4

Z48 = "00" * 48
REPORT_DATA = (
    "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656ae"
    "b755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
)
#: Upstream's claims for `tdx_quote_4.dat` (= the corpus debug TD), without `uefi_event_logs`.
UPSTREAM_DEBUG_TD: dict[str, Any] = {
    "init_data": Z48,
    "platform_instance_id": "82548d228d94d5e204a95b354dc61a02",
    "quote": {
        "header": {
            "version": "0400",
            "att_key_type": "0200",
            "tee_type": "81000000",
            "reserved": "00000000",
            "vendor_id": "939a7233f79c4ca9940a0db3957f0607",
            "user_data": "d099bfec0a477aa85a605dceabf2b10800000000",
        },
        "body": {
            "tcb_svn": "03000500000000000000000000000000",
            "mr_seam": "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656",
            "mrsigner_seam": Z48,
            "seam_attributes": "0000000000000000",
            "td_attributes": "0100001000000000",
            "xfam": "e742060000000000",
            "mr_td": "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031",
            "mr_config_id": Z48,
            "mr_owner": Z48,
            "mr_owner_config": Z48,
            "rtmr_0": "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288",
            "rtmr_1": "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596",
            "rtmr_2": Z48,
            "rtmr_3": Z48,
            "report_data": REPORT_DATA,
        },
    },
    "report_data": REPORT_DATA,
    "td_attributes": {"debug": True, "key_locker": False, "perfmon": False, "protection_keys": False, "septve_disable": True},
}

#: Upstream's DCAP supplemental claims (QVL supplemental data, DCAP 1.27) and their JSON types.
UPSTREAM_SUPPLEMENTAL_TYPES: dict[str, type] = {
    "earliest_issue_date": str, "latest_issue_date": str, "earliest_expiration_date": str, "tcb_date": str,
    "pck_crl_num": int, "root_ca_crl_num": int, "tcb_eval_num": int, "platform_provider_id": str, "sgx_type": str,
    "is_dynamic_platform": bool, "is_cached_keys": bool, "is_smt_enabled": bool, "root_key_id": str, "tcb_status": str,
    "collateral_expiration_status": str, "advisory_ids": list, "tcb_date_current": str, "tcb_status_current": str,
    "advisory_ids_current": list,
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def claims_of(quote: bytes, **kwargs: Any) -> dict[str, Any]:
    result = evaluate_tdx_quote(TdxVerificationInput(quote=quote, **kwargs), None)
    assert result.claims is not None, result.error
    return result.claims


def test_debug_td_claims_equal_upstreams() -> None:
    assert_parity("tdx", claims_of(DEBUG_TD.quote, now=DEBUG_TD.now, collateral=None), UPSTREAM_DEBUG_TD)


def _pck_platform_instance(quote: bytes) -> bytes:
    """The raw 16-byte OCTET STRING of OID 1.2.840.113741.1.13.1.6 in the quote's PCK leaf (no parser)."""
    pem = re.search(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", quote, re.S)
    assert pem is not None
    der = base64.b64decode(b"".join(pem.group(1).split()))
    at = der.index(bytes.fromhex("060a2a864886f84d010d0106")) + 12
    assert der[at : at + 2] == b"\x04\x10"
    return der[at + 2 : at + 18]


def test_platform_instance_id_is_the_little_endian_guid_printed_big_endian() -> None:
    raw = _pck_platform_instance(DEBUG_TD.quote)
    claims = claims_of(DEBUG_TD.quote, now=DEBUG_TD.now, collateral=None)
    assert claims["platform_instance_id"] == int.from_bytes(raw, "little").to_bytes(16, "big").hex()
    assert claims["platform_instance_id"] != raw.hex()


def test_supplemental_claims_have_upstreams_names_and_types() -> None:
    claims = claims_of(V4.quote, now=V4.now, collateral=V4.collateral)
    absent = documented("tdx")["absent"]
    for name, kind in UPSTREAM_SUPPLEMENTAL_TYPES.items():
        if name in absent:
            assert name not in claims
            continue
        assert isinstance(claims[name], kind) and not (kind is int and isinstance(claims[name], bool)), name
    for name in ("earliest_issue_date", "latest_issue_date", "earliest_expiration_date", "tcb_date"):
        assert RFC3339.match(claims[name]), claims[name]
    assert claims["tcb_status"] == "UpToDate" and claims["collateral_expiration_status"] == "0"
    assert claims["sgx_type"] in ("Standard", "Scalable", "Scalable with Integrity")
    assert len(bytes.fromhex(claims["platform_provider_id"])) == 16
    quote_part = set(flatten(UPSTREAM_DEBUG_TD))
    extras = set(claims) - set(UPSTREAM_SUPPLEMENTAL_TYPES) - {k.split(".")[0] for k in quote_part}
    assert extras == set(documented("tdx")["added"]), extras
