"""KBS protocol 0.4.0 messages (kbs-types), parsed strictly at the edge.

`from_json` takes the already-decoded JSON value and raises
`MalformedRequestError` naming the field for anything that does not fit.
Upstream guests send `extra-params` as `""` or an object and `init-data`
as `null`; both are accepted (trustee-server.md 2.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError, clip
from trustee_common.jose import TeePubKey
from trustee_common.tee import parse_tee

PROTOCOL_VERSION = "0.4.0"
INIT_DATA_FORMATS = ("toml",)


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedRequestError(f"{field}: must be a JSON object")
    return value


def _require(obj: dict[str, Any], key: str, field: str) -> Any:
    if key not in obj:
        raise MalformedRequestError(f"{field}: missing field {key!r}")
    return obj[key]


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedRequestError(f"{field}: must be a string")
    return value


@dataclass(frozen=True)
class Request:
    """Body of `POST /kbs/v0/auth`."""

    version: str
    tee: str
    extra_params: Any

    @classmethod
    def from_json(cls, value: object) -> Request:
        obj = _object(value, "request")
        version = _string(_require(obj, "version", "request"), "version")
        if version != PROTOCOL_VERSION:
            raise MalformedRequestError(
                f"KBS client protocol version mismatch: expect ={PROTOCOL_VERSION} while the request is {clip(version)}"
            )
        tee = parse_tee(_require(obj, "tee", "request"))
        extra = _require(obj, "extra-params", "request")
        if not (extra == "" or isinstance(extra, dict)):
            raise MalformedRequestError("extra-params: must be \"\" or an object")
        return cls(version, tee, extra)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "tee": self.tee, "extra-params": self.extra_params}


@dataclass(frozen=True)
class Challenge:
    """Reply of `/auth`: a base64 nonce and upstream's `""` extra-params."""

    nonce: str
    extra_params: Any = ""

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "extra-params": self.extra_params}

    @classmethod
    def from_json(cls, value: object) -> Challenge:
        obj = _object(value, "challenge")
        return cls(_string(_require(obj, "nonce", "challenge"), "nonce"), obj.get("extra-params", ""))


@dataclass(frozen=True)
class RuntimeData:
    nonce: str
    tee_pubkey: TeePubKey

    @classmethod
    def from_json(cls, value: object) -> RuntimeData:
        obj = _object(value, "runtime-data")
        nonce = _string(_require(obj, "nonce", "runtime-data"), "runtime-data.nonce")
        key = TeePubKey.from_json(_require(obj, "tee-pubkey", "runtime-data"), "runtime-data.tee-pubkey")
        return cls(nonce, key)

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey.jwk}


@dataclass(frozen=True)
class TeeEvidence:
    """`primary_evidence` is any JSON; `additional_evidence` is `""` or a JSON map as text."""

    primary_evidence: Any
    additional_evidence: str

    @classmethod
    def from_json(cls, value: object) -> TeeEvidence:
        obj = _object(value, "tee-evidence")
        primary = _require(obj, "primary_evidence", "tee-evidence")
        additional = _string(_require(obj, "additional_evidence", "tee-evidence"), "tee-evidence.additional_evidence")
        result = cls(primary, additional)
        result.devices()
        return result

    def devices(self) -> dict[str, Any]:
        """The additional evidence map `{<tee>: <evidence>}` (empty when `""`)."""
        if self.additional_evidence == "":
            return {}
        parsed = loads_json(self.additional_evidence, "tee-evidence.additional_evidence")
        devices = _object(parsed, "tee-evidence.additional_evidence")
        for name in devices:
            parse_tee(name, "tee-evidence.additional_evidence key")
        return devices

    def to_json(self) -> dict[str, Any]:
        return {"primary_evidence": self.primary_evidence, "additional_evidence": self.additional_evidence}


@dataclass(frozen=True)
class InitData:
    format: str
    body: str

    @classmethod
    def from_json(cls, value: object) -> InitData:
        obj = _object(value, "init-data")
        fmt = _string(_require(obj, "format", "init-data"), "init-data.format")
        if fmt not in INIT_DATA_FORMATS:
            raise MalformedRequestError(f"init-data.format: unsupported format {fmt!r} (only toml)")
        return cls(fmt, _string(_require(obj, "body", "init-data"), "init-data.body"))

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "body": self.body}


@dataclass(frozen=True)
class Attestation:
    """Body of `POST /kbs/v0/attest`."""

    runtime_data: RuntimeData
    tee_evidence: TeeEvidence
    init_data: InitData | None

    @classmethod
    def from_json(cls, value: object) -> Attestation:
        obj = _object(value, "attestation")
        runtime = RuntimeData.from_json(_require(obj, "runtime-data", "attestation"))
        evidence = TeeEvidence.from_json(_require(obj, "tee-evidence", "attestation"))
        raw_init = obj.get("init-data")
        init = None if raw_init is None else InitData.from_json(raw_init)
        return cls(runtime, evidence, init)

    def to_json(self) -> dict[str, Any]:
        return {
            "init-data": None if self.init_data is None else self.init_data.to_json(),
            "runtime-data": self.runtime_data.to_json(),
            "tee-evidence": self.tee_evidence.to_json(),
        }
