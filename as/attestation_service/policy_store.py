"""Attestation policies in a `KeyValueStore`: namespace `attestation_service_policy`, key `<id>.rego`.

Only storage: ids are checked with `core.policy.check_policy_id`, and
compiling is the caller's job (nothing here decides what a valid policy is).
"""

from __future__ import annotations

from attestation_service.core.policy import check_policy_id
from trustee_common.errors import StorageError
from trustee_common.storage import KeyValueStore

NAMESPACE = "attestation_service_policy"
SUFFIX = ".rego"


class PolicyStore:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    async def get(self, policy_id: str) -> str | None:
        data = await self._store.get(NAMESPACE, check_policy_id(policy_id) + SUFFIX)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise StorageError(f"stored policy {policy_id} is not UTF-8 text") from None

    async def put(self, policy_id: str, text: str, *, overwrite: bool = True) -> bool:
        return await self._store.put(NAMESPACE, check_policy_id(policy_id) + SUFFIX, text.encode("utf-8"), overwrite=overwrite)

    async def delete(self, policy_id: str) -> bool:
        return await self._store.delete(NAMESPACE, check_policy_id(policy_id) + SUFFIX)

    async def ids(self) -> list[str]:
        return [key.removesuffix(SUFFIX) for key in await self._store.list_keys(NAMESPACE) if key.endswith(SUFFIX)]
