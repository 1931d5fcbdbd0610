"""The CDH's `UnsealSecret`: verify a sealed secret with a trusted key, then open it through the KBS.

The trusted keys are the config's `sealed_secret.verification_keys`: each
is a `kbs:///...` resource URI (its key id is the URI, as upstream's
`kid`) or a file read at start-up (its key id is the file name, as
upstream's `/run/confidential-containers/cdh/sealed-secret/<kid>`). A
secret whose `kid` is not among them is refused; a key in the KBS is
fetched at each unseal (through the hub, with its attested token), so a
key replaced or denied at the KBS takes effect at once. Vault secrets
return the resource they name; envelope secrets fetch their KEK the same
way. All KBS reads go through `ResourceSource` (the hub); no I/O here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from guest.cdh import sealed
from trustee_common.errors import ConfigError, MalformedRequestError, TrusteeError, clip_repr

logger = logging.getLogger(__name__)


def is_kbs_uri(entry: str) -> bool:
    """True for an entry that is a resource URI (then it must parse), False for a file path."""
    return "://" in entry


class ResourceSource(Protocol):
    async def get_resource(self, uri: str) -> bytes:
        """The bytes of a `kbs:///...` resource, fetched with an attested token."""


@dataclass(frozen=True)
class KeyRing:
    """Trusted verification keys by key id: files already loaded, KBS URIs fetched on use."""

    files: dict[str, ec.EllipticCurvePublicKey]
    kbs_uris: frozenset[str]

    @classmethod
    def from_config(cls, entries: list[str], read_file: dict[str, bytes]) -> KeyRing:
        """`entries` as in the config; `read_file` holds the bytes of each file entry (the caller read them)."""
        files: dict[str, ec.EllipticCurvePublicKey] = {}
        uris: set[str] = set()
        for entry in entries:
            if is_kbs_uri(entry):
                uris.add(entry)
                continue
            kid = PurePath(entry).name
            if kid in files:
                raise ConfigError(f"sealed_secret.verification_keys: two files named {kid!r} (the file name is the key id)")
            try:
                files[kid] = sealed.load_verification_key(read_file[entry], f"sealed_secret.verification_keys {entry}")
            except MalformedRequestError as exc:
                raise ConfigError(exc.detail) from None
        return cls(files, frozenset(uris))

    def __bool__(self) -> bool:
        return bool(self.files or self.kbs_uris)


class Unsealer:
    def __init__(self, keys: KeyRing, resources: ResourceSource) -> None:
        self._keys = keys
        self._resources = resources

    async def unseal(self, secret: bytes) -> bytes:
        if not self._keys:
            raise ConfigError("no sealed-secret verification key configured: set sealed_secret.verification_keys in the CDH config")
        signed = sealed.parse_sealed(secret)
        payload = signed.verify(await self._key(signed.kid))
        content = sealed.parse_payload(payload)
        if isinstance(content, sealed.VaultSecret):
            plaintext = await self._fetch(content.name, "vault secret")
            logger.info("unsealed a vault secret naming %s (key %s)", content.name, signed.kid)
            return plaintext
        kek = await self._fetch(content.key_id, "envelope key")
        plaintext = content.open(content.data_key(kek))
        logger.info("unsealed an envelope secret with key %s (signed by %s)", content.key_id, signed.kid)
        return plaintext

    async def _key(self, kid: str) -> ec.EllipticCurvePublicKey:
        if kid in self._keys.files:
            return self._keys.files[kid]
        if kid not in self._keys.kbs_uris:
            raise sealed.SecretVerificationError(
                f"sealed secret is signed with key id {clip_repr(kid)}, which is not a configured verification key")
        data = await self._fetch(kid, "verification key")
        try:
            return sealed.load_verification_key(data, f"verification key {kid}")
        except MalformedRequestError as exc:
            raise ConfigError(f"{exc.detail} (the KBS resource is not a usable key)") from None

    async def _fetch(self, uri: str, what: str) -> bytes:
        try:
            return await self._resources.get_resource(uri)
        except TrusteeError as exc:
            try:
                renamed = type(exc)(f"{what} {uri}: {exc.detail}")
            except TypeError:  # an error class with more constructor arguments: keep it as it is
                raise exc from None
            raise renamed from exc
