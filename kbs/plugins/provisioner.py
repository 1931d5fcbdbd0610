"""The `provisioner` plugin: a per-VM disk key made by the KBS before the VM boots (trustee-server.md 2.9).

Upstream's default-build plugin, for an operator (or a hook sidecar) that
prepares a confidential VM whose guest unlocks its root disk with a key the
KBS releases after attestation. Routes, under `/kbs/v0/provisioner/`:

* `POST provision` (admin), body `{"vm_name": "...", "namespace": "default"}`:
  the VM's UUID is the UUIDv5 of `"<namespace>/<vm_name>"` in the namespace
  `feab5599-6854-52bc-95f0-0241c03e620a`; the first call makes a random
  alphanumeric key of `key_length` characters and stores the confdata TOML
  `version = "0.1.0"` / `[data]` / `"io.cryptsetup.key.text.root" = "<key>"`
  under `default/<uuid>/root`; every call answers
  `{"uuid": "<uuid>", "resource_path": "default/<uuid>/root"}`, the key kept.
* `DELETE provision/<uuid>` (admin): the key is removed;
  answers `{"status": "deleted"}` whether or not it existed, as upstream.
* `GET default/<uuid>/root` (attestation token + resource policy with
  `data.plugin = "provisioner"`): the TOML, JWE-encrypted to the TEE key,
  only when the token's init-data claims hold
  `"trustee.kbs.resource" = "kbs+provisioner:///default/<uuid>/root"`, which
  the operator wrote into that VM's init-data, so one VM's attestation
  cannot fetch another's key.

Keys live in namespace `provisioner` of the KBS's storage backend, so every
worker and replica on shared storage serves the same key. Differences from
upstream, on purpose: the UUID in a DELETE must be a UUID (upstream takes
any segment), a missing key is 404 `ResourceNotFound` and a missing or
wrong init-data binding 401 `PluginInternalError` naming it (upstream
answers 401 to both), other methods 405, other paths 404
`InvalidRequestPath`. `vm_name` and `namespace` must be non-empty strings
of at most 253 bytes without `/`.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import uuid
from typing import Any

from kbs.errors import InvalidRequestPathError, MethodNotAllowedError
from kbs.plugins.base import PluginRequest
from trustee_common.bounded import loads_json
from trustee_common.errors import MalformedRequestError, PluginInternalError, ResourceNotFoundError, clip
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

NAME = "provisioner"
NAMESPACE = "provisioner"
#: Upstream's UUIDv5 namespace (itself the UUIDv5 of "provisioner_plugin" in the URL namespace).
UUID_NAMESPACE = uuid.UUID("feab5599-6854-52bc-95f0-0241c03e620a")
#: The init-data claim that binds a VM to its key.
BINDING_CLAIM = "trustee.kbs.resource"
KEY_ALPHABET = string.ascii_letters + string.digits
METHODS = ("DELETE", "GET", "POST")
MAX_NAME_BYTES = 253


def vm_uuid(namespace: str, vm_name: str) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, f"{namespace}/{vm_name}"))


def resource_path(vm: str) -> str:
    return f"default/{vm}/root"


def confdata(key: str) -> bytes:
    """The confdata TOML the guest's attester parses (upstream's exact text)."""
    return f'version = "0.1.0"\n\n[data]\n"io.cryptsetup.key.text.root" = "{key}"\n'.encode()


def parse_provision(body: bytes) -> tuple[str, str]:
    """(namespace, vm_name) of a provision request; `MalformedRequestError` naming what is wrong."""
    try:
        data = loads_json(body, "provisioner request body")
    except MalformedRequestError:
        raise MalformedRequestError('provisioner: the body must be JSON {"vm_name": "...", "namespace": "..."}') from None
    if not isinstance(data, dict):
        raise MalformedRequestError('provisioner: the body must be a JSON object {"vm_name": "...", "namespace": "..."}')
    return _name(data, "namespace", "default"), _name(data, "vm_name", None)


def _name(data: dict[str, Any], key: str, default: str | None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value or "/" in value or len(value.encode()) > MAX_NAME_BYTES:
        raise MalformedRequestError(f"provisioner: {key} must be a non-empty string of at most {MAX_NAME_BYTES} bytes without '/'")
    return value


class ProvisionerPlugin:
    name = NAME

    def __init__(self, store: KeyValueStore, key_length: int) -> None:
        self._store = store
        self._key_length = key_length

    async def validate_auth(self, request: PluginRequest) -> bool:
        if request.method not in METHODS:
            raise MethodNotAllowedError(f"method {clip(request.method)} is not allowed on /kbs/v0/provisioner/... "
                                        f"(allowed: {', '.join(METHODS)})", METHODS)
        return request.method != "GET"

    async def encrypted(self, request: PluginRequest) -> bool:
        return request.method == "GET"

    async def handle(self, request: PluginRequest, init_data: Any = None) -> bytes:
        path = request.path
        if request.method == "POST" and path == ("provision",):
            return await self._provision(request.body)
        if request.method == "DELETE" and len(path) == 2 and path[0] == "provision":
            return await self._deprovision(path[1])
        if request.method == "GET" and len(path) == 3 and path[0] == "default" and path[2] == "root" and _is_uuid(path[1]):
            return await self._release("/".join(path), init_data)
        raise InvalidRequestPathError(f"Request path /kbs/v0/provisioner/{clip('/'.join(path))} is invalid for {request.method} "
                                      "(provisioner serves POST provision, DELETE provision/<uuid>, GET default/<uuid>/root)")

    async def _provision(self, body: bytes) -> bytes:
        namespace, vm_name = parse_provision(body)
        vm = vm_uuid(namespace, vm_name)
        path = resource_path(vm)
        key = "".join(secrets.choice(KEY_ALPHABET) for _ in range(self._key_length))
        if await self._store.put(NAMESPACE, path, confdata(key), overwrite=False):  # an existing key is kept
            logger.info("provisioner: made the disk key of %s/%s at %s", clip(namespace), clip(vm_name), path)
        return json.dumps({"uuid": vm, "resource_path": path}, separators=(",", ":")).encode()

    async def _deprovision(self, vm: str) -> bytes:
        if not _is_uuid(vm):
            raise MalformedRequestError(f"provisioner: {clip(vm)!r} is not a UUID")
        if await self._store.delete(NAMESPACE, resource_path(vm)):
            logger.info("provisioner: removed the disk key at %s", resource_path(vm))
        return b'{"status":"deleted"}'

    async def _release(self, path: str, init_data: Any) -> bytes:
        expected = f"kbs+provisioner:///{path}"
        bound = init_data.get(BINDING_CLAIM) if isinstance(init_data, dict) else None
        if bound is None:
            raise PluginInternalError(f"provisioner: the attestation token's init-data has no {BINDING_CLAIM} (expected {expected})")
        if bound != expected:
            raise PluginInternalError(f"provisioner: init-data resource mismatch: expected {expected}, got {clip(str(bound))}")
        value = await self._store.get(NAMESPACE, path)
        if value is None:
            raise ResourceNotFoundError(f"provisioner resource {path} not found")
        return value

    async def close(self) -> None:
        return None


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
