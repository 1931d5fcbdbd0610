"""Decode an event's data into the `details` object of the `uefi_event_logs` claims.

Which decoder applies to which event type, and what each produces, follows
Trustee's eventlog crate (trustee-server.md 8.3): strings for action, tag,
IPL and firmware-blob events, EFI variable fields, device paths of boot
services applications, and the AAEL entry (`EV_EVENT_TAG` with tag id
0x4141454C, guest-components.md 2.6) split into domain, operation and
content. Details are informational: event data that does not decode gives
empty details (`{}`) and never an error, because the digests, not the
details, are what the registers bind. Pure.
"""

from __future__ import annotations

import base64
import struct
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any

from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError

#: TCG_PCClientTaggedEvent id of an AAEL entry ("LEAA" on disk).
AAEL_TAG_ID = 0x4141454C

Details = dict[str, Any]


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _string(data: bytes) -> Details:
    text = _utf8(data)
    return {} if text is None else {"string": text}


def _platform_config_flags(data: bytes) -> Details:
    text = (_utf8(data) or "").replace("\x10", " ")
    return {"string": "".join(c for c in text if unicodedata.category(c) != "Cc")}


def _ipl(data: bytes) -> Details:
    if len(data) < 2:
        return {}
    if data[:2] == b"\x2e\x00":  # Google's UTF-16LE IPL strings
        body = data[2:-2]
        if len(data) == 2 or len(data) % 2:
            return {}
        return {"string": body.decode("utf-16-le", errors="replace")}
    text = _utf8(data.split(b"\x00", 1)[0])
    return {"string": data.hex() if text is None else text}


def _described_blob(data: bytes) -> Details:
    """UEFI_PLATFORM_FIRMWARE_BLOB2 / UEFI_HANDOFF_TABLE_POINTERS2: u8 size, then the description."""
    if not data or len(data) < 1 + data[0]:
        return {}
    description = data[1 : 1 + data[0]]
    text = _utf8(description.removesuffix(b"\x00"))
    return {} if text is None else {"string": text}


def raw_guid(data: bytes) -> str:
    """The 16 bytes in stored order, as 8-4-4-4-12 lower-case hex (upstream's `variable_name`)."""
    text = data.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def _efi_variable(data: bytes) -> Details:
    """UEFI_VARIABLE_DATA: GUID, u64 name length (chars), u64 data length, UTF-16LE name, data."""
    if len(data) < 32:
        return {}
    name_chars, data_length = struct.unpack_from("<QQ", data, 16)
    name_end = 32 + 2 * name_chars
    if name_end + data_length > len(data):
        return {}
    value = data[name_end : name_end + data_length]
    return {
        "unicode_name": data[32:name_end].decode("utf-16-le", errors="replace"),
        "unicode_name_length": name_chars,
        "variable_data": base64.b64encode(value).decode("ascii"),
        "variable_data_length": data_length,
        "variable_name": raw_guid(data[:16]),
    }


def _event_tag(data: bytes) -> Details:
    """TCG_PCClientTaggedEvent: u32 id, u32 size, data; AAEL entries also get `data`."""
    if len(data) < 8:
        return {}
    tag_id, size = struct.unpack_from("<II", data)
    tagged = data[8 : 8 + size]
    if len(tagged) != size:
        return {}
    details: Details = {"string": tagged.decode("utf-8", errors="replace").replace("\x00", "")}
    entry = _utf8(tagged) if tag_id == AAEL_TAG_ID else None
    parts = entry.split(" ", 2) if entry is not None else []
    if len(parts) == 3:
        details["data"] = {"domain": parts[0], "operation": parts[1], "content": _json_or_text(parts[2])}
        details["unicode_name"] = "AAEL"
    return details


def _json_or_text(text: str) -> Any:
    """AAEL content as JSON when it parses (as upstream), else the text itself."""
    try:
        return loads_json(text, "AAEL content")
    except MalformedRequestError:
        return text


def _boot_services_application(data: bytes) -> Details:
    """UEFI_IMAGE_LOAD_EVENT: location, length, link address (u64 each), u64 path length, device path."""
    if len(data) < 32:
        return {}
    (path_length,) = struct.unpack_from("<Q", data, 24)
    if path_length == 0 or 32 + path_length > len(data):
        return {}
    paths = device_path_nodes(data[32 : 32 + path_length])
    return {"device_paths": paths} if paths else {}


def device_path_nodes(path: bytes) -> list[str]:
    """One readable string per node of an EFI device path, up to its end node."""
    nodes: list[str] = []
    offset = 0
    while offset + 4 <= len(path):
        node_type, sub_type, length = struct.unpack_from("<BBH", path, offset)
        if node_type == 0x7F or length < 4 or offset + length > len(path):
            break
        nodes.append(_render_node(node_type, sub_type, path[offset + 4 : offset + length]))
        offset += length
    return nodes


def _guid(data: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(data[:16]))).upper()


def _pci(body: bytes) -> str:
    return f"Pci({body[0]},{body[1]})"


def _acpi(body: bytes) -> str:
    hid, uid = struct.unpack_from("<II", body)
    vendor = hid & 0xFFFF
    letters = "".join(chr(((vendor >> shift) & 0x1F) + 0x40) for shift in (10, 5, 0))
    return f"ACPI({letters}{hid >> 16:04X},{uid})"


def _hard_drive(body: bytes) -> str:
    number, start, size = struct.unpack_from("<IQQ", body)
    signature, fmt, sig_type = body[20:36], body[36], body[37]
    if sig_type == 0x02:
        sig = _guid(signature)
    elif sig_type == 0x01:
        sig = f"{struct.unpack_from('<I', signature)[0]:#010x}"
    else:
        sig = signature.hex()
    kind = {0x01: "MBR", 0x02: "GPT"}.get(fmt, str(fmt))
    return f"HD({number},{kind},{sig},{start:#x},{size:#x})"


def _vendor_media(body: bytes) -> str:
    return f"VenMedia({_guid(body)},{body[16:].hex()})"


def _file_path(body: bytes) -> str:
    return f"File({body.decode('utf-16-le', errors='replace').rstrip(chr(0))})"


#: (type, subtype) -> (minimum body length, renderer)
_NODE_RENDERERS: dict[tuple[int, int], tuple[int, Callable[[bytes], str]]] = {
    (0x01, 0x01): (2, _pci),
    (0x02, 0x01): (8, _acpi),
    (0x04, 0x01): (38, _hard_drive),
    (0x04, 0x03): (16, _vendor_media),
    (0x04, 0x04): (0, _file_path),
}


def _render_node(node_type: int, sub_type: int, body: bytes) -> str:
    known = _NODE_RENDERERS.get((node_type, sub_type))
    if known is not None and len(body) >= known[0]:
        return known[1](body)
    return f"Path({node_type},{sub_type},{body.hex()})"


_DECODERS: dict[int, Callable[[bytes], Details]] = {
    0x1: _string,  # EV_POST_CODE
    0x5: _string,  # EV_ACTION
    0x6: _event_tag,
    0xA: _platform_config_flags,
    0xC: _string,  # EV_COMPACT_HASH
    0xD: _ipl,
    0x12: _string,  # EV_OMIT_BOOT_DEVICE_EVENTS
    0x80000001: _efi_variable,
    0x80000002: _efi_variable,
    0x80000003: _boot_services_application,
    0x80000007: _string,  # EV_EFI_ACTION
    0x8000000A: _described_blob,
    0x8000000B: _described_blob,
    0x8000000C: _efi_variable,
    0x800000E0: _efi_variable,
}


def event_details(event_type: int, data: bytes) -> Details:
    """The `details` claim of one event (`{}` for types without a decoder)."""
    decoder = _DECODERS.get(event_type)
    return {} if decoder is None else decoder(data)
