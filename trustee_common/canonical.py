"""RFC 8785 canonical JSON and the runtime-data digest that binds evidence.

The KBS protocol binds evidence to a session by hashing the canonical JSON
of `{"additional-evidence", "nonce", "tee-pubkey"}` (devices:
`{"nonce", "tee-pubkey"}`) with the negotiated algorithm, sha384 by
default (trustee-server.md 2.3, guest-components.md 3.8).
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import rfc8785

from trustee_common.errors import MalformedRequestError


class HashAlgorithm(enum.Enum):
    """kbs-types `HashAlgorithm` names."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @classmethod
    def parse(cls, name: str) -> HashAlgorithm:
        """Case-insensitive; empty means sha384 (upstream's default)."""
        if name == "":
            return cls.SHA384
        try:
            return cls(name.lower())
        except ValueError:
            raise MalformedRequestError(f"unsupported hash algorithm {name!r}") from None

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.value, data).digest()


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialization."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedRequestError(f"value cannot be canonicalized: {exc}") from exc


def runtime_data_digest(value: Any, algorithm: HashAlgorithm = HashAlgorithm.SHA384) -> bytes:
    """`algorithm(JCS(value))`: the report data a guest puts in its evidence."""
    return algorithm.digest(canonical_json(value))


def primary_runtime_data(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str) -> dict[str, Any]:
    """The structured runtime data bound into the primary evidence."""
    return {"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": tee_pubkey}


def device_runtime_data(nonce: str, tee_pubkey: dict[str, Any]) -> dict[str, Any]:
    """The structured runtime data bound into each additional (device) evidence."""
    return {"nonce": nonce, "tee-pubkey": tee_pubkey}
