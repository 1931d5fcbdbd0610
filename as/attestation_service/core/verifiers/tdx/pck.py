"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), decoded with pyasn1 (evidence.md 1.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ

from trustee_common.errors import EvidenceError
from trustee_common.lru import BoundedLru

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_PREFIX = "1.2.840.113741.1.13.1"
TCB_COMPONENTS = 16
PARSED_CACHE_SIZE = 256
_SEQUENCES = (univ.Sequence, univ.SequenceOf)


class PckExtensionError(EvidenceError):
    """The PCK certificate lacks a well-formed SGX extension."""


@dataclass(frozen=True, slots=True)
class PckExtension:
    ppid: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


def _pairs(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, _SEQUENCES):
        raise PckExtensionError(f"PCK SGX extension {where}: not a SEQUENCE")
    found: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, _SEQUENCES) or len(item) != 2 or not isinstance(item[0], univ.ObjectIdentifier):
            raise PckExtensionError(f"PCK SGX extension {where}: entry is not (OID, value)")
        found[str(item[0])] = item[1]
    return found


def _need(pairs: dict[str, Any], suffix: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = pairs.get(f"{_PREFIX}{suffix}")
    if not isinstance(value, kind):
        raise PckExtensionError(f"PCK SGX extension: {where} ({_PREFIX}{suffix}) missing or of the wrong type")
    return value


def _optional(pairs: dict[str, Any], suffix: str, kind: type | tuple[type, ...]) -> Any:
    value = pairs.get(f"{_PREFIX}{suffix}")
    return value if isinstance(value, kind) else None


def parse_pck_extension(cert: x509.Certificate) -> PckExtension:
    try:
        raw = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise PckExtensionError("PCK certificate has no SGX extension (1.2.840.113741.1.13.1)") from None
    if not isinstance(raw, x509.UnrecognizedExtension):
        raise PckExtensionError("PCK SGX extension: unexpected decoded form")
    cached = _PARSED.get(raw.value)
    if cached is None:
        cached = _parse_der(raw.value)
        _PARSED.put(raw.value, cached)
    return cached


#: Parsed SGX extensions by their DER bytes (the parse is a pure function of them; pyasn1 takes
#: most of a TDX verification, and a platform's PCK certificate repeats in every quote it signs).
_PARSED: BoundedLru[bytes, PckExtension] = BoundedLru(PARSED_CACHE_SIZE)


def _parse_der(der: bytes) -> PckExtension:
    try:
        decoded, rest = decoder.decode(der)
    except PyAsn1Error as exc:
        raise PckExtensionError(f"PCK SGX extension: not DER: {exc}") from None
    if rest:
        raise PckExtensionError("PCK SGX extension: trailing bytes")
    top = _pairs(decoded, "top level")
    tcb = _pairs(_need(top, ".2", _SEQUENCES, "TCB"), "TCB")
    components = tuple(int(_need(tcb, f".2.{i}", univ.Integer, f"TCB component {i}")) for i in range(1, TCB_COMPONENTS + 1))
    config = _optional(top, ".7", _SEQUENCES)
    flags = _pairs(config, "configuration") if config is not None else {}

    def flag(suffix: str) -> bool | None:
        value = _optional(flags, suffix, univ.Boolean)
        return None if value is None else bool(value)

    instance = _optional(top, ".6", univ.OctetString)
    return PckExtension(
        ppid=bytes(_need(top, ".1", univ.OctetString, "PPID")),
        tcb_components=components,
        pce_svn=int(_need(tcb, ".2.17", univ.Integer, "PCESVN")),
        cpu_svn=bytes(_need(tcb, ".2.18", univ.OctetString, "CPUSVN")),
        pce_id=bytes(_need(top, ".3", univ.OctetString, "PCE-ID")),
        fmspc=bytes(_need(top, ".4", univ.OctetString, "FMSPC")),
        sgx_type=int(_need(top, ".5", univ.Integer, "SGX type")),
        platform_instance_id=None if instance is None else bytes(instance),
        dynamic_platform=flag(".7.1"),
        cached_keys=flag(".7.2"),
        smt_enabled=flag(".7.3"),
    )
