"""RFC 8785 canonical JSON and the runtime-data digest that binds evidence.

The KBS protocol binds evidence to a session by hashing the canonical JSON
of `{"additional-evidence", "nonce", "tee-pubkey"}` (devices:
`{"nonce", "tee-pubkey"}`) with the negotiated algorithm, sha384 by
default (trustee-server.md 2.3, guest-components.md 3.8).
"""

from __future__ import annotations

import enum
import hashlib
import json
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


#: For plain values (see `_plain`), JCS is exactly this encoding: the same string escapes
#: (RFC 8785 3.2.2.2 = Python's with ensure_ascii=False), ASCII keys sort the same by
#: code point as by UTF-16 unit, and safe integers print as digits.
_PLAIN_JCS = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
_SAFE_INTEGER = 2**53 - 1


def _plain(value: Any) -> bool:
    """Only dicts with ASCII keys, lists, strings, booleans, null and integers within +-(2^53 - 1)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(child)
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not -_SAFE_INTEGER <= item <= _SAFE_INTEGER:
                return False
        elif not (kind is str or kind is bool or item is None):
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialization (the rfc8785 package, or the standard encoder where that is identical)."""
    if _plain(value):
        try:
            return _PLAIN_JCS.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 names the error
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
