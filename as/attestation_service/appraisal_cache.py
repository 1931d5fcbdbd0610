"""The AS's appraisal inputs (policy texts, reference values) cached per appraisal epoch.

Without a cache every attestation reads the policy text from storage and
asks the RVPS for the epoch and then for the values the policy names. Here
the process keeps one `Snapshot`: the appraisal epoch (`trustee_common.epoch`)
read first, then the policy texts by id and the reference values by name
set, filled lazily after that read. An attestation takes the current
snapshot, stamps the snapshot's epoch into its token and reads its inputs
only from that snapshot.

Invalidation, correct across replicas sharing storage and RVPS:

- The epoch is re-read at most every `ttl` seconds (one read at a time;
  concurrent attestations share it). When it differs, the snapshot is
  dropped and a new, empty one starts at the new epoch.
- A token is always stamped with the epoch of the snapshot its appraisal
  used. Data in a snapshot was read after its epoch, so it is never older
  than the stamp. A token appraised from a stale snapshot (a change made
  elsewhere, less than `ttl` ago) therefore carries the stale epoch, and
  the KBS refuses it as `StaleAttestation` once it has learned the newer
  epoch (docs/token-freshness.md). What a cache adds is at most `ttl`
  (plus one epoch read) before new appraisals use the new inputs; the
  KBS's bound for releases under old inputs is unchanged (its
  `appraisal_epoch_ttl_seconds` plus one AS round trip), because
  `fresh_epoch` (the AS's `GetAppraisalEpoch`) is never cached. With both
  defaults: a release under old inputs stops within 1 s + one AS call,
  and new tokens reflect a change within 1 s + one epoch read.
- `fresh_epoch` also drops a snapshot it sees to be stale, so a KBS that
  just learned of a change makes this AS use it for the guest's
  re-attestation.
- Changes made through this process (policy set/delete, reference values
  through the RVPS proxy, `InvalidatingProvider`) call `invalidate`, so they
  apply to the next attestation here at once.
- Reference values expire without any write (no epoch change). Values read
  with List carry their expirations, and a cached set is used only until the
  earliest of them. Query replies carry none, so a set read with Query is
  kept at most `ttl` seconds.

`ttl = 0` turns caching off: every attestation reads the epoch and its
inputs itself (a snapshot lives for one attestation).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from attestation_service.policy_store import PolicyStore
from rvps.core.record import ReferenceValue
from rvps.ports import ReferenceValueProvider
from trustee_common.epoch import combined

#: `appraisal_cache_ttl_seconds` default and upper limit.
DEFAULT_TTL_SECONDS = 1.0
MAX_TTL_SECONDS = 60.0
#: Up to this many named reference values are queried one by one; above it, one List call for those names.
MAX_SINGLE_QUERIES = 16

ValueSet = dict[str, Any]
#: A fetched value and the wall-clock time it must not be used after (None: until the epoch changes).
Fetched = tuple[Any, datetime.datetime | None]


class Clock(Protocol):
    def __call__(self) -> datetime.datetime: ...


@dataclass
class Snapshot:
    """One epoch's inputs; `checked_at` is when (monotonic) the epoch was last confirmed current."""

    epoch: str
    checked_at: float
    policies: dict[str, asyncio.Future[Fetched]] = field(default_factory=dict)
    values: dict[tuple[str, ...] | None, asyncio.Future[Fetched]] = field(default_factory=dict)


class AppraisalCache:
    def __init__(
        self,
        policies: PolicyStore,
        reference_values: ReferenceValueProvider,
        ttl: float,
        clock: Clock,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        on_read: Callable[[str], None] = lambda _input: None,
    ) -> None:
        self._policies = policies
        self._rvps = reference_values
        self._ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._snapshot: Snapshot | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        #: Called with `epoch`, `policy` or `reference_values` per read (metrics).
        self._on_read = on_read

    async def fresh_epoch(self) -> str:
        """The current epoch, never cached; a snapshot at another epoch is dropped."""
        epoch = await self._read_epoch()
        if self._snapshot is not None and self._snapshot.epoch != epoch:
            self.invalidate()
        return epoch

    def invalidate(self) -> None:
        """A change was made through this process: the next attestation reads everything again."""
        self._snapshot = None
        self._generation += 1

    async def current(self) -> Snapshot:
        """The snapshot one attestation uses (its epoch goes into the token)."""
        if self._ttl <= 0:
            return Snapshot(await self._read_epoch(), self._monotonic())
        snapshot = self._usable()
        if snapshot is not None:
            return snapshot
        async with self._lock:
            while (snapshot := self._usable()) is None:
                snapshot = await self._refresh()
                if snapshot is not None:
                    break
        return snapshot

    def _usable(self) -> Snapshot | None:
        snapshot = self._snapshot
        if snapshot is not None and self._monotonic() - snapshot.checked_at < self._ttl:
            return snapshot
        return None

    async def _refresh(self) -> Snapshot | None:
        """Re-read the epoch; None when an invalidation raced with the read (read again)."""
        generation, started, previous = self._generation, self._monotonic(), self._snapshot
        epoch = await self._read_epoch()
        if generation != self._generation:
            return None
        if previous is not None and previous.epoch == epoch:
            previous.checked_at = started
            return previous
        self._snapshot = Snapshot(epoch, started)
        return self._snapshot

    async def _read_epoch(self) -> str:
        self._on_read("epoch")
        return combined(await self._policies.epoch(), await self._rvps.epoch())

    # --- inputs -------------------------------------------------------------------

    async def policy(self, snapshot: Snapshot, policy_name: str) -> str | None:
        """The stored text; an absent policy is not remembered (clients choose the ids, so the snapshot stays bounded)."""
        text: str | None = await self._memo(snapshot.policies, policy_name, lambda: self._fetch_policy(policy_name))
        if text is None:
            snapshot.policies.pop(policy_name, None)
        return text

    async def reference_values(self, snapshot: Snapshot, names: Iterable[str] | None) -> ValueSet:
        """The live values named (all of them for None), read once per snapshot until the earliest expiry."""
        # A tuple is taken as given (a policy's `queried_names` is sorted already); any order only changes the cache key.
        key = names if names is None or type(names) is tuple else tuple(sorted(set(names)))
        values: ValueSet = await self._memo(snapshot.values, key, lambda: self._fetch_values(key))
        return values

    async def _memo(self, table: dict[Any, asyncio.Future[Fetched]], key: Any, fetch: Callable[[], Awaitable[Fetched]]) -> Any:
        """One fetch per key at a time, shared by concurrent attestations; refetched after its expiry or failure."""
        entry = table.get(key)
        if entry is None or (entry.done() and (entry.cancelled() or entry.exception() is not None or _expired(entry, self._clock()))):
            entry = asyncio.ensure_future(fetch())
            table[key] = entry
        value, _ = await asyncio.shield(entry)
        return value

    async def _fetch_policy(self, policy_name: str) -> Fetched:
        self._on_read("policy")
        return await self._policies.get(policy_name), None

    async def _fetch_values(self, names: tuple[str, ...] | None) -> Fetched:
        self._on_read("reference_values")
        started = self._clock()
        if names is None:
            return _with_expiry(await self._rvps.list(), set())
        if not names:
            return {}, None
        if len(names) > MAX_SINGLE_QUERIES:
            return _with_expiry(await self._rvps.list(names), set(names))  # an older RVPS may ignore `names`
        texts = await asyncio.gather(*(self._rvps.query(n) for n in names))
        values = {name: json.loads(text) for name, text in zip(names, texts, strict=True) if text is not None}
        return values, started + datetime.timedelta(seconds=self._ttl)  # Query carries no expiration


def _with_expiry(records: list[ReferenceValue], wanted: set[str]) -> Fetched:
    kept = [r for r in records if not wanted or r.name in wanted]
    until = min((r.expiration for r in kept), default=None)
    return {r.name: r.value for r in kept}, until


def _expired(entry: asyncio.Future[Fetched], now: datetime.datetime) -> bool:
    until = entry.result()[1]
    return until is not None and now >= until


class InvalidatingProvider:
    """The RVPS as served by the AS's proxy: writes through it invalidate the AS's cache at once."""

    def __init__(self, provider: ReferenceValueProvider, cache: AppraisalCache) -> None:
        self._provider = provider
        self._cache = cache

    async def register(self, message: str) -> None:
        try:
            await self._provider.register(message)
        finally:
            self._cache.invalidate()

    async def query(self, name: str) -> str | None:
        return await self._provider.query(name)

    async def delete(self, name: str) -> bool:
        try:
            return await self._provider.delete(name)
        finally:
            self._cache.invalidate()

    async def list(self, names: Collection[str] | None = None) -> list[ReferenceValue]:
        return await self._provider.list(names)

    async def epoch(self) -> str:
        return await self._provider.epoch()
