"""Upstream's `tdx` claim names (trustee-server.md 8.3): hex strings for every quote field."""

from __future__ import annotations

from typing import Any

from attestation_service.core.verifiers.tdx.quote import TdReport15, TdxQuote

TD_ATTRIBUTE_BITS = {"debug": 0, "septve_disable": 28, "protection_keys": 30, "key_locker": 31, "perfmon": 63}


def td_attributes(raw: bytes) -> dict[str, bool]:
    value = int.from_bytes(raw, "little")
    return {name: bool(value >> bit & 1) for name, bit in TD_ATTRIBUTE_BITS.items()}


def quote_claims(quote: TdxQuote) -> dict[str, Any]:
    """Claims read from the quote alone (no DCAP supplemental data)."""
    raw = quote.header.raw
    header = {
        "version": raw[0:2].hex(),
        "att_key_type": raw[2:4].hex(),
        "tee_type": raw[4:8].hex(),
        "reserved": raw[8:12].hex(),
        "vendor_id": raw[12:28].hex(),
        "user_data": raw[28:48].hex(),
    }
    b = quote.body
    body = {
        "tcb_svn": b.tee_tcb_svn.hex(),
        "mr_seam": b.mr_seam.hex(),
        "mrsigner_seam": b.mr_signer_seam.hex(),
        "seam_attributes": b.seam_attributes.hex(),
        "td_attributes": b.td_attributes.hex(),
        "xfam": b.xfam.hex(),
        "mr_td": b.mr_td.hex(),
        "mr_config_id": b.mr_config_id.hex(),
        "mr_owner": b.mr_owner.hex(),
        "mr_owner_config": b.mr_owner_config.hex(),
        "rtmr_0": b.rtmr_0.hex(),
        "rtmr_1": b.rtmr_1.hex(),
        "rtmr_2": b.rtmr_2.hex(),
        "rtmr_3": b.rtmr_3.hex(),
        "report_data": b.report_data.hex(),
    }
    if isinstance(b, TdReport15):
        body["tee_tcb_svn2"] = b.tee_tcb_svn2.hex()
        body["mr_servicetd"] = b.mr_servicetd.hex()
    quote_part: dict[str, Any] = {"header": header, "body": body}
    if quote.header.version == 5:
        quote_part["type"] = quote.body_type.to_bytes(2, "little").hex()
        quote_part["size"] = quote.body_size.to_bytes(4, "little").hex()
    return {
        "quote": quote_part,
        "td_attributes": td_attributes(b.td_attributes),
        "report_data": b.report_data.hex(),
        "init_data": b.mr_config_id.hex(),
    }
