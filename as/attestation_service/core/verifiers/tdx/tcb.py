"""TCB Info v3 (TDX) and TD_QE identity models, level matching and Intel's status convergence (evidence.md 1.5, 1.6 steps 6, 9, 11, 12)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trustee_common.errors import EvidenceError

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"
STATUSES = (
    UP_TO_DATE, SW_HARDENING_NEEDED, CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED,
    OUT_OF_DATE, OUT_OF_DATE_CONFIGURATION_NEEDED, REVOKED,
)


class CollateralError(EvidenceError):
    """Collateral (TCB Info, QE identity, CRLs, chains) that is malformed or does not verify."""


def parse_time(text: object, where: str) -> datetime.datetime:
    if not isinstance(text, str):
        raise CollateralError(f"{where}: not a date-time string")
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CollateralError(f"{where}: {text!r} is not an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise CollateralError(f"{where}: {text!r} has no time zone")
    return value.astimezone(datetime.UTC)


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if isinstance(value, bool) and kind is int:
        raise CollateralError(f"{where}.{key}: not an integer")
    if not isinstance(value, kind):
        raise CollateralError(f"{where}.{key}: missing or of the wrong type")
    return value


def _hex(obj: dict[str, Any], key: str, size: int, where: str) -> bytes:
    text = _field(obj, key, str, where)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise CollateralError(f"{where}.{key}: not hex") from None
    if len(value) != size:
        raise CollateralError(f"{where}.{key}: must be {size} bytes, got {len(value)}")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CollateralError(f"{where}: not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    tcb_date: datetime.datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IsvLevel:
    """A level of a module identity or the QE identity: `tcb.isvsvn`."""

    isv_svn: int
    tcb_date: datetime.datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IsvLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    id: str
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    tdx_module: ModuleIdentity
    module_identities: tuple[ModuleIdentity, ...]
    levels: tuple[TcbLevel, ...]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    id: str
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    levels: tuple[IsvLevel, ...]


def _status(obj: dict[str, Any], where: str) -> str:
    status = _field(obj, "tcbStatus", str, where)
    if status not in STATUSES:
        raise CollateralError(f"{where}.tcbStatus: unknown status {status!r}")
    return str(status)


def _advisories(obj: dict[str, Any], where: str) -> tuple[str, ...]:
    value = obj.get("advisoryIDs", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CollateralError(f"{where}.advisoryIDs: not a list of strings")
    return tuple(value)


def _isv_levels(value: object, where: str) -> tuple[IsvLevel, ...]:
    if not isinstance(value, list):
        raise CollateralError(f"{where}: not a list")
    levels = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        level = _object(item, at)
        tcb = _object(level.get("tcb"), f"{at}.tcb")
        levels.append(IsvLevel(
            int(_field(tcb, "isvsvn", int, f"{at}.tcb")), parse_time(level.get("tcbDate"), f"{at}.tcbDate"),
            _status(level, at), _advisories(level, at),
        ))
    return tuple(levels)


def _components(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != 16:
        raise CollateralError(f"{where}: must list 16 components")
    return tuple(int(_field(_object(item, f"{where}[{i}]"), "svn", int, f"{where}[{i}]")) for i, item in enumerate(value))


def _module(obj: dict[str, Any], where: str, ident: str) -> ModuleIdentity:
    levels = _isv_levels(obj.get("tcbLevels", []), f"{where}.tcbLevels")
    return ModuleIdentity(
        ident, _hex(obj, "mrsigner", 48, where), _hex(obj, "attributes", 8, where), _hex(obj, "attributesMask", 8, where), levels
    )


def _loads(raw: bytes, where: str) -> dict[str, Any]:
    try:
        return _object(json.loads(raw), where)
    except (ValueError, UnicodeDecodeError):
        raise CollateralError(f"{where}: not JSON") from None


def parse_tcb_info(raw: bytes) -> TcbInfo:
    """The `tcbInfo` object, from the exact bytes that were signed."""
    where = "tcb_info"
    info = _loads(raw, where)
    levels = []
    for index, item in enumerate(_field(info, "tcbLevels", list, where)):
        at = f"{where}.tcbLevels[{index}]"
        level = _object(item, at)
        tcb = _object(level.get("tcb"), f"{at}.tcb")
        levels.append(TcbLevel(
            _components(tcb.get("sgxtcbcomponents"), f"{at}.tcb.sgxtcbcomponents"),
            int(_field(tcb, "pcesvn", int, f"{at}.tcb")),
            _components(tcb.get("tdxtcbcomponents"), f"{at}.tcb.tdxtcbcomponents"),
            parse_time(level.get("tcbDate"), f"{at}.tcbDate"), _status(level, at), _advisories(level, at),
        ))
    identities = tuple(
        _module(_object(item, f"{where}.tdxModuleIdentities[{i}]"), f"{where}.tdxModuleIdentities[{i}]",
                str(_field(_object(item, f"{where}.tdxModuleIdentities[{i}]"), "id", str, f"{where}.tdxModuleIdentities[{i}]")))
        for i, item in enumerate(info.get("tdxModuleIdentities", []) if isinstance(info.get("tdxModuleIdentities", []), list) else [])
    )
    return TcbInfo(
        id=str(_field(info, "id", str, where)),
        version=int(_field(info, "version", int, where)),
        issue_date=parse_time(info.get("issueDate"), f"{where}.issueDate"),
        next_update=parse_time(info.get("nextUpdate"), f"{where}.nextUpdate"),
        fmspc=_hex(info, "fmspc", 6, where),
        pce_id=_hex(info, "pceId", 2, where),
        tcb_evaluation_data_number=int(_field(info, "tcbEvaluationDataNumber", int, where)),
        tdx_module=_module(_object(info.get("tdxModule"), f"{where}.tdxModule"), f"{where}.tdxModule", "tdxModule"),
        module_identities=identities,
        levels=tuple(sorted(levels, key=lambda lv: (lv.sgx_components, lv.pce_svn, lv.tdx_components), reverse=True)),
    )


def parse_qe_identity(raw: bytes) -> QeIdentity:
    where = "qe_identity"
    ident = _loads(raw, where)
    return QeIdentity(
        id=str(_field(ident, "id", str, where)),
        version=int(_field(ident, "version", int, where)),
        issue_date=parse_time(ident.get("issueDate"), f"{where}.issueDate"),
        next_update=parse_time(ident.get("nextUpdate"), f"{where}.nextUpdate"),
        tcb_evaluation_data_number=int(_field(ident, "tcbEvaluationDataNumber", int, where)),
        miscselect=int.from_bytes(_hex(ident, "miscselect", 4, where), "big"),
        miscselect_mask=int.from_bytes(_hex(ident, "miscselectMask", 4, where), "big"),
        attributes=_hex(ident, "attributes", 16, where),
        attributes_mask=_hex(ident, "attributesMask", 16, where),
        mrsigner=_hex(ident, "mrsigner", 32, where),
        isv_prod_id=int(_field(ident, "isvprodid", int, where)),
        levels=_isv_levels(ident.get("tcbLevels"), f"{where}.tcbLevels"),
    )


# --- matching ---------------------------------------------------------------------


def match_isv_level(levels: Sequence[IsvLevel], isv_svn: int) -> IsvLevel | None:
    """The first (highest) level whose `isvsvn` the given SVN reaches."""
    return next((level for level in levels if isv_svn >= level.isv_svn), None)


def match_platform_level(
    levels: Sequence[TcbLevel], pck_components: Sequence[int], pck_pce_svn: int, tee_tcb_svn: bytes
) -> TcbLevel | None:
    """Intel QVL: the first level met by the PCK SGX SVNs, the PCESVN and the TDX SVNs.

    TDX components 0 and 1 are skipped when the module major version
    (`tee_tcb_svn[1]`) is > 0: the module identity covers them (step 6).
    """
    start = 2 if tee_tcb_svn[1] > 0 else 0
    for level in levels:
        sgx_ok = all(p >= s for p, s in zip(pck_components, level.sgx_components, strict=True)) and pck_pce_svn >= level.pce_svn
        tdx_ok = all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))
        if sgx_ok and tdx_ok:
            return level
    return None


def converge(platform: str, other: str) -> str:
    """Intel's rule for folding a module or QE status into the platform status (evidence.md 1.6 step 12)."""
    if other == REVOKED:
        return REVOKED
    if other in (OUT_OF_DATE, OUT_OF_DATE_CONFIGURATION_NEEDED):
        if platform in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return OUT_OF_DATE
        if platform in (CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


def relaunch_status(status_now: str, status_after_relaunch: str) -> str:
    """TDX 1.5 TD-preserving update: out of date only because the TD predates an update already installed."""
    if status_now in (OUT_OF_DATE, OUT_OF_DATE_CONFIGURATION_NEEDED):
        if status_after_relaunch in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return TD_RELAUNCH_ADVISED
        if status_after_relaunch in (CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED
    return status_now


def union(*groups: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for group in groups:
        seen.extend(item for item in group if item not in seen)
    return seen
