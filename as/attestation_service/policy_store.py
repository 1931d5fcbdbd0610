"""Attestation policies in a `KeyValueStore`: namespace `attestation_service_policy`, key `<id>.rego`.

Every write that changes what is stored also writes a new appraisal epoch
(`trustee_common.epoch`, after the change), whichever route made it.
Only storage: ids are checked with `core.policy.check_policy_id`, and
compiling is the caller's job (nothing here decides what a valid policy is).
"""

from __future__ import annotations

from attestation_service.core.policy import check_policy_id
from trustee_common.epoch import POLICY_KEY, bump_epoch, read_epoch
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
        written = await self._store.put(NAMESPACE, check_policy_id(policy_id) + SUFFIX, text.encode("utf-8"), overwrite=overwrite)
        if written:
            await bump_epoch(self._store, POLICY_KEY)
        return written

    async def delete(self, policy_id: str) -> bool:
        deleted = await self._store.delete(NAMESPACE, check_policy_id(policy_id) + SUFFIX)
        if deleted:
            await bump_epoch(self._store, POLICY_KEY)
        return deleted

    async def epoch(self) -> str:
        return await read_epoch(self._store, POLICY_KEY)

    async def ids(self) -> list[str]:
        return [key.removesuffix(SUFFIX) for key in await self._store.list_keys(NAMESPACE) if key.endswith(SUFFIX)]
