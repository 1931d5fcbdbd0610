"""The `pkcs11` plugin: resources kept in an HSM token, and RSA wrapping with an HSM key pair (trustee-server.md 2.9).

Storage model (upstream's): a resource `<repo>/<type>/<tag>` is one
secret-key object (`CKO_SECRET_KEY`, `CKK_GENERIC_SECRET`, private,
extractable) whose `CKA_LABEL` is the path and whose `CKA_VALUE` is the
data. Routes, under `/kbs/v0/pkcs11/`:

* `resource/<repo>/<type>/<tag>`: GET (attestation token + resource policy,
  the value JWE-encrypted to the TEE key), POST (admin: store the body),
  DELETE (admin).
* `wrap-key`: POST (admin) encrypts the body with the public key labelled
  `lookup_label`; GET (token + policy) decrypts the body with the private
  key of that label, the result JWE-encrypted. `rsa_mechanism` picks
  RSA-OAEP with SHA-256 (`RsaPkcsOaep`) or with SHA-1 (`RsaPkcsTest`).

Differences from upstream, on purpose: objects are token objects
(`CKA_TOKEN`), so resources survive a KBS restart; a POST replaces an
existing resource (the new object is created first, then the old ones are
destroyed) rather than adding a second object with the same label; a
missing resource is 404 `ResourceNotFound`.

One logged-in read-write session serves every request; python-pkcs11 is
blocking, so each operation runs in a thread, one at a time. The PIN is
used once to log in and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pkcs11
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as pk

from kbs.config import Pkcs11PluginConfig
from kbs.errors import InvalidRequestPathError, MethodNotAllowedError
from kbs.plugins.base import PluginRequest
from trustee_common.errors import ConfigError, PluginInternalError, ResourceNotFoundError, TrusteeError, UpstreamError, clip
from trustee_common.storage.directory import parse_resource_path

logger = logging.getLogger(__name__)

NAME = "pkcs11"
#: `rsa_mechanism` -> (hash, MGF) of RSA-OAEP.
OAEP_PARAMS = {"RsaPkcsOaep": (Mechanism.SHA256, MGF.SHA256), "RsaPkcsTest": (Mechanism.SHA_1, MGF.SHA1)}
#: PKCS#11 errors that mean the token or device is gone, not that the request is wrong: 503.
UNAVAILABLE = (pk.DeviceRemoved, pk.DeviceError, pk.DeviceMemory, pk.TokenNotPresent, pk.SessionClosed,
               pk.SessionHandleInvalid, pk.UserNotLoggedIn)
ADMIN_METHODS = ("DELETE", "POST")
METHODS = ("DELETE", "GET", "POST")

T = TypeVar("T")


def open_session(config: Pkcs11PluginConfig, pin: str) -> Any:
    """Load the module, pick the `slot_index`-th slot with a token, log in; `ConfigError`s name what failed (never the PIN)."""
    try:
        lib = pkcs11.lib(str(config.module))
    except (pk.PKCS11Error, OSError) as exc:
        raise ConfigError(f"plugins.pkcs11.module: cannot load the PKCS#11 module {config.module}: {exc}") from None
    try:
        slots = lib.get_slots(token_present=True)
    except pk.PKCS11Error as exc:
        raise ConfigError(f"plugins.pkcs11: the module {config.module} cannot list its slots ({type(exc).__name__})") from None
    if config.slot_index >= len(slots):
        raise ConfigError(f"plugins.pkcs11.slot_index {config.slot_index} is out of range: the module has {len(slots)} slot(s) "
                          "with a token")
    token = slots[config.slot_index].get_token()
    try:
        return token.open(rw=True, user_pin=pin)
    except (pk.PinIncorrect, pk.PinInvalid, pk.PinLenRange) as exc:
        raise ConfigError(f"plugins.pkcs11: the token {token.label.strip()!r} refused the user PIN ({type(exc).__name__})") from None
    except pk.PKCS11Error as exc:
        raise ConfigError(f"plugins.pkcs11: cannot log in to the token {token.label.strip()!r} ({type(exc).__name__})") from None


class Pkcs11Plugin:
    name = NAME

    def __init__(self, session: Any, rsa_mechanism: str, lookup_label: str) -> None:
        self._session = session
        self._oaep = OAEP_PARAMS[rsa_mechanism]
        self._label = lookup_label
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, config: Pkcs11PluginConfig, pin: str) -> Pkcs11Plugin:
        session = open_session(config, pin)
        logger.info("pkcs11 plugin: logged in to slot index %d of %s", config.slot_index, config.module)
        return cls(session, config.rsa_mechanism, config.lookup_label)

    async def validate_auth(self, request: PluginRequest) -> bool:
        if request.method not in METHODS:
            raise MethodNotAllowedError(f"method {clip(request.method)} is not allowed on /kbs/v0/pkcs11/... "
                                        f"(allowed: {', '.join(METHODS)})", METHODS)
        return request.method in ADMIN_METHODS

    async def encrypted(self, request: PluginRequest) -> bool:
        return True

    async def handle(self, request: PluginRequest, init_data: Any = None) -> bytes:
        if request.path == ("wrap-key",):
            if request.method == "POST":
                return await self._run("wrap", lambda: self._wrap(request.body))
            if request.method == "GET":
                return await self._run("unwrap", lambda: self._unwrap(request.body))
            raise MethodNotAllowedError("method DELETE is not allowed on /kbs/v0/pkcs11/wrap-key (allowed: GET, POST)", ("GET", "POST"))
        if len(request.path) < 2 or request.path[0] != "resource":
            raise InvalidRequestPathError(f"Request path /kbs/v0/pkcs11/{clip('/'.join(request.path))} is invalid "
                                          "(pkcs11 serves resource/<repo>/<type>/<tag> and wrap-key)")
        path = "/".join(request.path[1:])
        parse_resource_path(path)
        if request.method == "GET":
            return await self._run("read", lambda: self._read(path))
        if request.method == "POST":
            await self._run("write", lambda: self._write(path, request.body))
            logger.info("pkcs11 plugin: resource %s written (%d bytes)", path, len(request.body))
            return b""
        await self._run("delete", lambda: self._delete(path))
        logger.info("pkcs11 plugin: resource %s deleted", path)
        return b""

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        try:
            self._session.close()
        except pk.PKCS11Error as exc:
            logger.warning("pkcs11 plugin: closing the session failed (%s)", type(exc).__name__)

    async def _run(self, what: str, operation: Callable[[], T]) -> T:
        """`operation` in a thread, one at a time; PKCS#11 failures become `UpstreamError` or `PluginInternalError`."""
        async with self._lock:
            try:
                return await asyncio.to_thread(operation)
            except TrusteeError:
                raise
            except UNAVAILABLE as exc:
                raise UpstreamError(f"pkcs11 plugin: the HSM is unavailable ({type(exc).__name__})") from None
            except pk.PKCS11Error as exc:
                raise PluginInternalError(f"pkcs11 plugin: {what} failed ({type(exc).__name__})") from None

    def _objects(self, label: str) -> list[Any]:
        return list(self._session.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.SECRET_KEY}))

    def _read(self, path: str) -> bytes:
        for obj in self._objects(path):
            try:
                return bytes(obj[Attribute.VALUE])
            except (pk.AttributeSensitive, pk.AttributeTypeInvalid):
                raise PluginInternalError(f"pkcs11 plugin: the object labelled {path} has no readable value") from None
        raise ResourceNotFoundError(f"resource {path} not found")

    def _write(self, path: str, data: bytes) -> None:
        old = self._objects(path)
        self._session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.VALUE: data,
            Attribute.LABEL: path,
        })
        for obj in old:
            obj.destroy()

    def _delete(self, path: str) -> None:
        found = self._objects(path)
        if not found:
            raise ResourceNotFoundError(f"resource {path} not found")
        for obj in found:
            obj.destroy()

    def _key(self, kind: ObjectClass, what: str) -> Any:
        for key in self._session.get_objects({Attribute.LABEL: self._label, Attribute.CLASS: kind}):
            return key
        raise PluginInternalError(f"pkcs11 plugin: no {what} key labelled {self._label!r} in the token (lookup_label)")

    def _wrap(self, data: bytes) -> bytes:
        key = self._key(ObjectClass.PUBLIC_KEY, "public")
        return bytes(key.encrypt(data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(*self._oaep, None)))

    def _unwrap(self, data: bytes) -> bytes:
        key = self._key(ObjectClass.PRIVATE_KEY, "private")
        return bytes(key.decrypt(data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(*self._oaep, None)))
