"""The `swid` extractor: reference values from a SWID / TCG RIM XML manifest.

What upstream's extractor reads (trustee-server.md 7.3; tested there with
NVIDIA GPU vBIOS RIMs). The signature is **not** checked, as upstream.

- the first SWID `Meta` element (namespace `SWID_NS`) gives the name prefix
  `<PlatformManufacturerStr (RIM namespace), spaces → '_'>.<edition>`;
- under the first SWID `Payload`, every SWID `Resource` with
  `type="Measurement"` gives `<prefix>.measurement_<index>` with every
  '-' → '_' (Rego-friendly), valued with the list of its
  `Hash0`, `Hash1`, ... attributes (namespace `HASH_NS`, read until the
  first missing one), leaving out hashes of only '0's; a resource left
  with no hash gives no value.

The XML must be UTF-8 and is parsed by `defusedxml` with DTDs forbidden
(so no entities, internal or external); size is bounded by the message.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from trustee_common.errors import InvalidReferenceValueError

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
RIMIM_NS = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
HASH_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
MAX_BYTES = 4 * 1024 * 1024
MAX_VALUES = 10_000


def _fail(reason: str) -> InvalidReferenceValueError:
    return InvalidReferenceValueError(f"payload of a swid message: {reason}")


def parse_xml(payload: bytes) -> Element:
    if len(payload) > MAX_BYTES:
        raise _fail(f"{len(payload)} bytes, above the limit of {MAX_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("not UTF-8 text") from None
    try:
        root: Element = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise _fail(f"XML with a DTD or entities is refused ({type(exc).__name__})") from None
    except (ParseError, ValueError) as exc:
        raise _fail(f"not well-formed XML: {exc}") from None
    return root


def _first(root: Element, local: str) -> Element:
    for element in root.iter(f"{{{SWID_NS}}}{local}"):
        return element
    raise _fail(f"no SWID {local} element (namespace {SWID_NS})")


def swid_extractor(payload: bytes) -> dict[str, Any]:
    root = parse_xml(payload)
    meta = _first(root, "Meta")
    manufacturer = meta.get(f"{{{RIMIM_NS}}}PlatformManufacturerStr")
    if manufacturer is None:
        raise _fail("the Meta element has no PlatformManufacturerStr attribute (RIM namespace)")
    edition = meta.get("edition")
    if edition is None:
        raise _fail("the Meta element has no edition attribute")
    prefix = f"{manufacturer.replace(' ', '_')}.{edition}"
    values: dict[str, Any] = {}
    for resource in _first(root, "Payload").iter(f"{{{SWID_NS}}}Resource"):
        if resource.get("type", "") != "Measurement":
            continue
        index = resource.get("index")
        if index is None:
            raise _fail("a Measurement Resource has no index attribute")
        hashes = _hashes(resource)
        if hashes:
            values[f"{prefix}.measurement_{index}".replace("-", "_")] = hashes
            if len(values) > MAX_VALUES:
                raise _fail(f"more than {MAX_VALUES} reference values")
    return values


def _hashes(resource: Element) -> list[str]:
    found = []
    position = 0
    while (digest := resource.get(f"{{{HASH_NS}}}Hash{position}")) is not None:
        if digest.strip("0"):
            found.append(digest)
        position += 1
    return found
