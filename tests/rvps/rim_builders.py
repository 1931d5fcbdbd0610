"""Test inputs for the `swid` and `corim` extractors, built here (no upstream files).

The CoRIM mirrors the shape of upstream's unsigned example (one CoMID whose
reference triple for class ACME/RoadRunner has a UUID-keyed digest), built
with cbor2 from the CoRIM CDDL's integer keys. The SWID is a minimal TCG RIM
in the namespaces the extractor reads.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import cbor2
from cbor2 import CBORTag

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
RIM_NS = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
HASH_NS = "http://www.w3.org/2001/04/xmlenc#sha384"

MKEY_UUID = uuid.UUID("31fb5abf-023e-4992-aa4e-95f9c1503bfa")
DIGEST_A = bytes.fromhex("a3a5e715f0cc574a73c3f9bebb6bc24f32ffd5b67b387244c2c909da779a1478")
DIGEST_B = bytes(range(48))
RAW = b"\x00\x01\xfe\xff"

#: What `corim_message()` registers, as upstream names and values it.
CORIM_VALUES = {
    f"ACME/RoadRunner/{MKEY_UUID}/digests": [DIGEST_A.hex(), DIGEST_B.hex()],
    "ACME/RoadRunner/claim3/BL/digests": [DIGEST_B.hex()],
    "ACME/RoadRunner/claim3/BL/raw_bytes": RAW.hex(),
    "ACME Inc/Road Runner 2/firmware/SN-0001/digests": [DIGEST_A.hex()],
}


def message(kind: str, payload: bytes) -> str:
    return json.dumps({"version": "0.1.0", "type": kind, "payload": base64.b64encode(payload).decode()})


def comid(*triples: Any) -> dict[int, Any]:
    return {1: {0: "comid-test"}, 4: {0: list(triples)}}


def corim_map(*tags: Any) -> dict[int, Any]:
    return {0: "corim-test", 1: list(tags)}


def default_comids() -> list[dict[int, Any]]:
    first = comid(
        [{0: {1: "ACME", 2: "RoadRunner"}}, [
            {0: CBORTag(37, MKEY_UUID.bytes), 1: {2: [[1, DIGEST_A], [7, DIGEST_B]]}},
            {0: 3, 1: {11: "BL", 2: [["sha-384", DIGEST_B]], 4: CBORTag(560, RAW)}},
        ]],
    )
    second = comid([{0: {1: "ACME Inc", 2: "Road Runner 2"}}, [{0: "firmware", 1: {8: "SN-0001", 2: [[1, DIGEST_A]]}}]])
    return [first, second]


def corim_bytes(comids: list[dict[int, Any]] | None = None, *, outer: tuple[int, ...] = (500, 502)) -> bytes:
    """An unsigned CoRIM (tag 501) holding each CoMID as tag 506 bytes, plus a CoSWID tag the extractor skips."""
    tags: list[Any] = [CBORTag(506, cbor2.dumps(c)) for c in (default_comids() if comids is None else comids)]
    tags.append(CBORTag(505, cbor2.dumps({0: "swid-tag"})))
    item: Any = CBORTag(501, corim_map(*tags))
    for tag in reversed(outer):
        item = CBORTag(tag, item)
    return bytes(cbor2.dumps(item))


def signed_corim_bytes() -> bytes:
    """A COSE_Sign1 (tag 18) around the unsigned CoRIM; the signature is junk (upstream does not check it)."""
    return bytes(cbor2.dumps(CBORTag(18, [cbor2.dumps({1: -7}), {}, corim_bytes(outer=()), b"\x00" * 64])))


def corim_message(payload: bytes | None = None) -> str:
    return message("corim", corim_bytes() if payload is None else payload)


def swid_xml(manufacturer: str = "NVIDIA Corporation", edition: str = "GPU", resources: str | None = None) -> str:
    if resources is None:
        resources = (
            f'<Resource type="Measurement" index="12" h:Hash0="{"0" * 96}" h:Hash1="{"ab" * 48}" h:Hash2="{"cd" * 48}"/>'
            f'<Resource type="Measurement" index="1-3" h:Hash0="{"ef" * 48}"/>'
            f'<Resource type="Measurement" index="20" h:Hash0="{"0" * 96}"/>'
            f'<Resource type="File" index="21" h:Hash0="{"12" * 48}"/>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<SoftwareIdentity xmlns="{SWID_NS}" xmlns:rim="{RIM_NS}" xmlns:h="{HASH_NS}" name="vbios" tagId="t1">'
        f'<Meta rim:PlatformManufacturerStr="{manufacturer}" edition="{edition}"/>'
        f"<Payload>{resources}</Payload></SoftwareIdentity>"
    )


#: What `swid_xml()` registers, as upstream names and values it.
SWID_VALUES = {
    "NVIDIA_Corporation.GPU.measurement_12": ["ab" * 48, "cd" * 48],
    "NVIDIA_Corporation.GPU.measurement_1_3": ["ef" * 48],
}
