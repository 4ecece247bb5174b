"""``SecretCache``: typed get/put over aiocache, an LRU bound, single-flight fetches.

Keys. A secret can be asked for by name, full ARN or partial ARN; all three
resolve through an alias table to one canonical ARN, so they share one entry.
Each entry is one (ARN, version selector) pair, the selector being a version id
or a stage (``AWSCURRENT`` when none is given): ``max_entries`` counts these.

Freshness. An entry records when upstream last confirmed it. Past
``ttl_seconds`` without confirmation it is not served as a hit; the next read
goes upstream. (The refresher of later issues confirms entries in the
background, so reads rarely see that.) Entries are never expired by aiocache's
own TTL: a value past its TTL is still the last good value, which stale-if-error
needs.

Single flight. Concurrent misses for the same (id, selector) share one
upstream call: the first creates a task, the rest await it through
``asyncio.shield`` so one cancelled reader cannot cancel the fetch for others.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aiocache import SimpleMemoryCache

from agent.source import SecretSource
from agent.types import SecretValue, Selector, partial_arn

Outcome = Literal["hit", "miss", "refresh"]
LookupObserver = Callable[[Outcome], None]


@dataclass
class Entry:
    """A cached version and when upstream last vouched for it (monotonic seconds)."""

    value: SecretValue
    confirmed_at: float


class SecretCache:
    """In-memory secret cache in front of a :class:`~agent.source.SecretSource`."""

    def __init__(
        self,
        source: SecretSource,
        *,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        observe: LookupObserver | None = None,
    ) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._observe = observe or (lambda _outcome: None)
        # timeout=None: aiocache would otherwise wrap every get in wait_for (a task per read).
        self._store = SimpleMemoryCache(timeout=None)
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._aliases: dict[str, str] = {}
        self._keys_by_arn: dict[str, set[str]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[SecretValue]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def caching(self) -> bool:
        """False when ``ttl_seconds`` is 0: every read goes upstream (still coalesced)."""
        return self._ttl > 0

    def resolve(self, secret_id: str) -> str | None:
        """The canonical ARN for a name/ARN/partial ARN seen before, else None."""
        return self._aliases.get(secret_id)

    async def peek(self, secret_id: str, selector: Selector) -> Entry | None:
        """The cached entry, fresh or not, without touching upstream or LRU order."""
        arn = self._aliases.get(secret_id)
        if arn is None:
            return None
        entry: Entry | None = await self._store.get(f"{arn}|{selector.cache_suffix}")
        return entry

    async def get(self, secret_id: str, selector: Selector, *, refresh: bool = False) -> tuple[SecretValue, Outcome]:
        """Return the value, from cache when fresh, else from upstream (single flight).

        Raises :class:`~agent.errors.UpstreamError` when upstream fails.
        """
        if not refresh and self.caching:
            arn = self._aliases.get(secret_id)
            if arn is not None:
                key = f"{arn}|{selector.cache_suffix}"
                entry: Entry | None = await self._store.get(key)
                if entry is not None and self._clock() - entry.confirmed_at < self._ttl:
                    self._lru.move_to_end(key)
                    self._observe("hit")
                    return entry.value, "hit"
        outcome: Outcome = "refresh" if refresh else "miss"
        self._observe(outcome)
        return await self._fetch(secret_id, selector), outcome

    async def _fetch(self, secret_id: str, selector: Selector) -> SecretValue:
        flight = (secret_id, selector.cache_suffix)
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._load(secret_id, selector))
            self._inflight[flight] = task
            task.add_done_callback(lambda done: self._finish(flight, done))
        return await asyncio.shield(task)

    def _finish(self, flight: tuple[str, str], task: asyncio.Task[SecretValue]) -> None:
        self._inflight.pop(flight, None)
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter went away

    async def _load(self, secret_id: str, selector: Selector) -> SecretValue:
        value = await self._source.get_secret_value(secret_id, selector)
        await self.put(value, selector, asked_as=secret_id)
        return value

    async def put(self, value: SecretValue, selector: Selector, *, asked_as: str | None = None) -> None:
        """Store ``value`` under its ARN and ``selector``; register its aliases; evict LRU."""
        if not self.caching:
            return
        arn = value.arn
        for alias in (value.name, arn, partial_arn(arn), asked_as):
            if alias:
                self._aliases[alias] = arn
        key = f"{arn}|{selector.cache_suffix}"
        await self._store.set(key, Entry(value=value, confirmed_at=self._clock()))
        self._lru[key] = None
        self._lru.move_to_end(key)
        self._keys_by_arn.setdefault(arn, set()).add(key)
        while len(self._lru) > self._max:
            oldest, _ = self._lru.popitem(last=False)
            await self._evict(oldest)

    async def _evict(self, key: str) -> None:
        await self._store.delete(key)
        arn = key.rpartition("|")[0]
        keys = self._keys_by_arn.get(arn)
        if keys is not None:
            keys.discard(key)
            if not keys:
                # Last version of this secret gone: drop its aliases too, so the
                # alias table stays bounded by max_entries as well.
                del self._keys_by_arn[arn]
                for alias in [a for a, target in self._aliases.items() if target == arn]:
                    del self._aliases[alias]

    def arns(self) -> list[str]:
        """Canonical ARNs with at least one cached version."""
        return list(self._keys_by_arn)
