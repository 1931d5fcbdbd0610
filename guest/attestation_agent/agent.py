"""The Attestation Agent core: evidence, TEE names, tokens, runtime measurement.

`AttestationAgent` holds the detected attesters and one `TokenProvider` per
configured token type, and implements the semantics of upstream's AA API
(guest-components.md 2.2). It does no I/O itself: token providers (KBS,
CoCo AS) are adapters passed in, and the gRPC servicer only translates.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from guest.attesters.base import Attester, InitDataBinder, RuntimeMeasurer
from trustee_common.errors import ConfigError, MalformedRequestError

logger = logging.getLogger(__name__)

#: The token types upstream AA can be built with.
TOKEN_TYPES = ("kbs", "coco_as")

_HOW_TO_CONFIGURE = {
    "kbs": "set [token_configs.kbs] url in the AA config file, or AA_KBC_PARAMS=cc_kbc::<url> without one",
    "coco_as": "set [token_configs.coco_as] url in the AA config file",
}


class TokenProvider(Protocol):
    async def get_token(self) -> bytes:
        """A fresh token, in the format of its token type."""


class MeasurementResult(enum.Enum):
    """Upstream's `RuntimeMeasurementResult`."""

    OK = 0
    NOT_SUPPORTED = 1
    NOT_ENABLED = 2


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class AttestationAgent:
    def __init__(
        self,
        primary: Attester,
        devices: list[Attester],
        token_providers: Mapping[str, TokenProvider],
        *,
        enable_eventlog: bool = False,
        init_pcr: int = 17,
    ) -> None:
        self.primary = primary
        self.devices = list(devices)
        self._tokens = dict(token_providers)
        self.enable_eventlog = enable_eventlog
        self.init_pcr = init_pcr

    @property
    def tee(self) -> str:
        return self.primary.tee

    @property
    def additional_tees(self) -> list[str]:
        return [device.tee for device in self.devices]

    def get_evidence(self, runtime_data: bytes) -> bytes:
        """Primary evidence over `runtime_data`, used unchanged as report data."""
        return compact_json(self.primary.get_evidence(runtime_data))

    def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        """`{"<tee>": evidence}` for every device attester, or b"" when there are none."""
        if not self.devices:
            return b""
        return compact_json({device.tee: device.get_evidence(runtime_data) for device in self.devices})

    async def get_token(self, token_type: str) -> bytes:
        if token_type not in TOKEN_TYPES:
            raise MalformedRequestError(f"unknown token type {token_type!r} (supported: {', '.join(TOKEN_TYPES)})")
        provider = self._tokens.get(token_type)
        if provider is None:
            raise ConfigError(f"token type {token_type!r} is not configured: {_HOW_TO_CONFIGURE[token_type]}")
        token = await provider.get_token()
        logger.info("issued a %s token", token_type)
        return token

    def extend_runtime_measurement(self, domain: str, operation: str, content: str, register_index: int | None) -> MeasurementResult:
        """Upstream's order: event log enabled? attester able? then the event itself."""
        if not self.enable_eventlog:
            return MeasurementResult.NOT_ENABLED
        if not isinstance(self.primary, RuntimeMeasurer):
            return MeasurementResult.NOT_SUPPORTED
        check_event(domain, operation, content)
        raise ConfigError(
            f"runtime measurement on {self.tee} (register {self.init_pcr if register_index is None else register_index}) "
            "needs the AAEL event log, which this attestation agent does not implement yet"
        )

    def bind_init_data(self, digest: bytes) -> None:
        """Bind an init-data digest; platforms without binding just log, as upstream."""
        if isinstance(self.primary, InitDataBinder):
            self.primary.bind_init_data(digest)
            logger.info("init-data digest bound to the %s platform", self.tee)
            return
        logger.info("init-data binding is not supported by the %s attester; continuing", self.tee)


def check_event(domain: str, operation: str, content: str) -> None:
    """An AAEL event is `<domain> <operation> <content>`: no spaces in the first two, no newline."""
    for name, value in (("domain", domain), ("operation", operation)):
        if not value or any(c.isspace() for c in value):
            raise MalformedRequestError(f"event {name} must be a non-empty string without whitespace")
    if "\n" in content:
        raise MalformedRequestError("event content must not contain a newline")
