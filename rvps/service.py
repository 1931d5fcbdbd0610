"""Reference values kept in a `KeyValueStore` (namespace `reference_value`).

Registration validates the whole message before the first write, checks
the size caps (`rvps.core.limits`: one value, and all live values after
the upsert), and restores the previous records if a write fails halfway,
so a caller sees all of a message's values or none. Expired records are invisible: the store
entry carries `expires_at`, and every read checks `now < expiration` too.
Every registration or deletion then writes a new appraisal epoch
(`trustee_common.epoch`), which the AS folds into the epoch its tokens carry.
Not here: wire formats (`rvps.server`), message syntax (`rvps.core`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Collection, Sequence

from rvps.core.limits import ReferenceValueLimits
from rvps.core.message import records_from_message
from rvps.core.record import NAMESPACE, ReferenceValue, check_name, storage_key, value_json
from trustee_common.epoch import REFERENCE_VALUE_KEY, bump_epoch, read_epoch
from trustee_common.errors import InvalidReferenceValueError, MalformedRequestError, TrusteeError
from trustee_common.storage import KeyValueStore

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ReferenceValueService:
    def __init__(self, store: KeyValueStore, clock: Clock = utc_now, limits: ReferenceValueLimits | None = None) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits or ReferenceValueLimits()
        self._write_lock = asyncio.Lock()

    async def register(self, message: str) -> None:
        # Parsing a large swid/corim/sample payload takes up to about a second: off the event loop,
        # so that an AS with the BuiltIn RVPS keeps answering attestations meanwhile.
        records = await asyncio.to_thread(records_from_message, message, self._clock())
        await self.store_records(records)
        logger.info("registered reference values: %s", ", ".join(r.name for r in records))

    async def store_records(self, records: Sequence[ReferenceValue]) -> None:
        """Upsert `records` all-or-nothing (as seen by this service's callers), within the size caps."""
        async with self._write_lock:
            replaced = {r.name for r in records}
            self._limits.check(records, [r for r in await self.list() if r.name not in replaced])
            previous = {r.name: await self._store.get(NAMESPACE, storage_key(r.name)) for r in records}
            written: list[str] = []
            try:
                for record in records:
                    await self._store.put(NAMESPACE, storage_key(record.name), record.to_bytes(),
                                          expires_at=record.expiration.timestamp())
                    written.append(record.name)
            except TrusteeError:
                await self._restore(written, previous)
                await self._bump_after_failure()
                raise
            await bump_epoch(self._store, REFERENCE_VALUE_KEY)

    async def _bump_after_failure(self) -> None:
        """A reader may have seen part of a failed registration: its tokens must not outlive it."""
        try:
            await bump_epoch(self._store, REFERENCE_VALUE_KEY)
        except TrusteeError as exc:
            logger.error("could not write a new reference-value epoch after a failed registration: %s", exc.detail)

    async def _restore(self, names: list[str], previous: dict[str, bytes | None]) -> None:
        for name in names:
            old, key = previous[name], storage_key(name)
            try:
                if old is None:
                    await self._store.delete(NAMESPACE, key)
                else:
                    old_record = ReferenceValue.from_bytes(old, key)
                    await self._store.put(NAMESPACE, key, old, expires_at=old_record.expiration.timestamp())
            except TrusteeError as exc:
                logger.error("could not restore reference value %s after a failed registration: %s", name, exc.detail)

    async def _live(self, key: str) -> ReferenceValue | None:
        data = await self._store.get(NAMESPACE, key)
        if data is None:
            return None
        record = ReferenceValue.from_bytes(data, key)
        return record if record.is_live(self._clock()) else None

    async def query(self, name: str) -> str | None:
        _check_query_name(name)
        record = await self._live(storage_key(name))
        return None if record is None else value_json(record.value)

    async def delete(self, name: str) -> bool:
        _check_query_name(name)
        async with self._write_lock:
            deleted = await self._store.delete(NAMESPACE, storage_key(name))
            if deleted:
                await bump_epoch(self._store, REFERENCE_VALUE_KEY)
        logger.info("deleted reference value %s: %s", name, "existed" if deleted else "absent")
        return deleted

    async def list(self, names: Collection[str] | None = None) -> list[ReferenceValue]:
        """Live records, sorted by name: all of them, or those named in `names` (one read each, however
        many are stored; names that cannot be stored are simply absent)."""
        keys = await self._store.list_keys(NAMESPACE) if names is None else [storage_key(n) for n in set(names) if _storable(n)]
        found = []
        for key in keys:
            record = await self._live(key)
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda r: r.name)

    async def epoch(self) -> str:
        return await read_epoch(self._store, REFERENCE_VALUE_KEY)

    async def purge_expired(self) -> int:
        return await self._store.purge_expired()


def _storable(name: str) -> bool:
    try:
        check_name(name)
    except InvalidReferenceValueError:
        return False
    return True


def _check_query_name(name: str) -> None:
    try:
        check_name(name, "reference_value_id")
    except InvalidReferenceValueError as exc:
        raise MalformedRequestError(exc.detail) from None
