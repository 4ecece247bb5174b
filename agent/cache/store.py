"""``SecretCache``: typed get/put over aiocache, an LRU bound, single-flight fetches, stale-if-error.

Keys. A secret can be asked for by name, full ARN or partial ARN; all three
resolve through an alias table to one canonical ARN, so they share one entry.
Each entry is one (ARN, selector) pair, the selector being a version id or a
stage (``AWSCURRENT`` when none is given): ``max_entries`` counts these.

Freshness. An entry records when upstream last confirmed it. A *stage* entry
older than ``ttl_seconds`` is revalidated on the next read: DescribeSecret, and
GetSecretValue only if the stage moved (what AWS's agent does). A *version-id*
entry never expires: a version's value is immutable. In poll mode the
refresher confirms entries in the background, so reads rarely revalidate.

Stale-while-revalidate. A stage entry past ``ttl_seconds`` by at most
``stale_while_revalidate_seconds`` (and within ``max_stale_seconds``) is
answered at once (``revalidating``) while one background revalidation runs;
the reads after it see its result, so a hung or slow upstream costs readers of
a busy secret nothing. An entry older than that window (a secret read rarely)
is revalidated before it is served, as before, within the read deadline: a
rarely read secret is never served one rotation late.

Stale-if-error. When the upstream call a read needs fails transiently
(throttling, 5xx, timeouts, connection errors), the cached value is served
anyway while it is at most ``max_stale_seconds`` past its last confirmation,
and the lookup says so (``stale``). That key then backs off (exponential, full
jitter): reads inside the backoff window make no upstream call. Non-transient
errors (AccessDenied, ResourceNotFound) are never hidden: they reach the reader
(after a background revalidation, the next one). ``ResourceNotFoundException``
is remembered for ``negative_ttl_seconds`` (:mod:`agent.cache.failures`).

Single flight and deadlines. Concurrent misses for the same (id, selector)
share one upstream call, a task of the cache's own that no reader can cancel.
A reader waits for it at most ``read_deadline_seconds`` (then 504, or the
stale value), and not at all once :meth:`SecretCache.stop` was called at
shutdown (then 503, or the stale value); the call itself runs on and fills
the cache if it ever answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiocache import SimpleMemoryCache

from agent.cache.failures import FailureBook, detached
from agent.cache.metadata import MetadataStore
from agent.cache.rotations import Rotation, RotationFeed
from agent.cache.waits import UpstreamWaits
from agent.core.errors import UpstreamError
from agent.core.types import AWSCURRENT, AWSPREVIOUS, SecretValue, Selector, partial_arn
from agent.upstream.source import SecretMeta, SecretSource

Outcome = Literal["hit", "miss", "refresh", "revalidated", "revalidating", "stale"]
# Metrics also see "error" (a lookup that ended in an upstream error) and
# "negative" (a remembered ResourceNotFoundException answered without a call).
LookupObserver = Callable[[str], None]
# Failure records kept per cache entry allowed (and never fewer than this).
MIN_FAILURE_RECORDS = 1000
# (id as asked, version suffix), plus a marker for refreshNow's own calls.
Flight = tuple[str, ...]


@dataclass(slots=True, weakref_slot=True)  # one per cached version; a kept FreshHit refers to it weakly
class Entry:
    """A cached version, when upstream last vouched for it, and a recorded hard failure."""

    value: SecretValue
    confirmed_at: float
    error: UpstreamError | None = None


@dataclass(frozen=True)
class Lookup:
    """What a read got: the value, how, and how long since upstream confirmed it."""

    value: SecretValue
    outcome: Outcome
    age: float


@dataclass(slots=True, eq=False)
class FreshHit:
    """A plain hit :meth:`SecretCache.fresh` found: where it lives, to serve it again cheaply."""

    secret_id: str  # as asked
    arn: str
    key: str
    # Weak: a hit kept (the hot path's tickets) must not keep an evicted or replaced value alive.
    entry_ref: weakref.ref[Entry]
    expires: bool  # False for a version id: a version never changes, so it ages without expiring

    @property
    def entry(self) -> Entry:
        """The entry; alive while :meth:`SecretCache.age_of` gives the hit an age (the cache holds it)."""
        entry = self.entry_ref()
        assert entry is not None, "a hit used after age_of ended it"
        return entry

    @property
    def value(self) -> SecretValue:
        """The cached value."""
        return self.entry.value


def _key(arn: str, selector: Selector) -> str:
    return f"{arn}|{selector.cache_suffix}"


STAGE_CURRENT = Selector(version_stage=AWSCURRENT)
STAGE_PREVIOUS = Selector(version_stage=AWSPREVIOUS)


class SecretCache:
    """In-memory secret cache in front of a :class:`~agent.upstream.secretsmanager.SecretSource`."""

    def __init__(
        self,
        source: SecretSource,
        *,
        ttl_seconds: float,
        max_entries: int,
        max_stale_seconds: float,
        read_deadline_seconds: float | None = None,
        negative_ttl_seconds: float = 0,
        stale_while_revalidate_seconds: float | None = None,
        rotations: RotationFeed | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: LookupObserver | None = None,
    ) -> None:
        self._source = source
        self.rotations = rotations or RotationFeed()
        self._ttl = ttl_seconds
        self._max = max_entries
        self._max_stale = max_stale_seconds
        self._waits = UpstreamWaits(read_deadline_seconds)
        self._swr = stale_while_revalidate_seconds  # None: the whole max_stale window
        self._clock = clock
        self._observe = observe or (lambda _outcome: None)
        # timeout=None: aiocache would otherwise wrap every get in wait_for (a task per read).
        self._store = SimpleMemoryCache(timeout=None)
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._aliases: dict[str, str] = {}
        self._keys_by_arn: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        # ARN → when (monotonic) a read was last answered stale, until upstream vouches again.
        self.serving_stale: dict[str, float] = {}
        self.metadata = MetadataStore(max_entries)  # DescribeSecret/ListSecrets views, for the SDK route
        self._inflight: dict[Flight, asyncio.Task[tuple[SecretValue, Outcome]]] = {}
        self._describing: dict[str, asyncio.Task[SecretMeta]] = {}
        self.failures = FailureBook(
            max_records=max(MIN_FAILURE_RECORDS, max_entries),
            negative_ttl_seconds=negative_ttl_seconds,
            clock=clock,
        )

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def caching(self) -> bool:
        """False when ``ttl_seconds`` is 0: every read goes upstream (still coalesced)."""
        return self._ttl > 0

    @property
    def max_entries(self) -> int:
        """The LRU bound."""
        return self._max

    def resolve(self, secret_id: str) -> str | None:
        """The canonical ARN for a name/ARN/partial ARN seen before, else None."""
        return self._aliases.get(secret_id)

    def arns(self) -> list[str]:
        """Canonical ARNs with at least one cached version."""
        return list(self._keys_by_arn)

    def name_of(self, arn: str) -> str | None:
        """The friendly name of a cached secret."""
        return self._names.get(arn)

    async def describe(self, secret_id: str) -> SecretMeta:
        """A secret's metadata, as fresh as reads are.

        The view upstream confirmed within ``ttl_seconds``, else DescribeSecret
        (single flight, read deadline), else (transient failure) the view held
        while within ``max_stale_seconds``.
        """
        now = self._clock()
        arn = self._aliases.get(secret_id) or self.metadata.arn_of(secret_id)
        held = self.metadata.get(arn) if arn is not None and self.caching else None
        if held is not None and now - held[1] < self._ttl:
            return held[0]
        asked = arn or secret_id
        task = self._describing.get(asked)
        try:
            if task is None:
                self._waits.refuse_when_stopping()
                task = asyncio.ensure_future(self._source.describe(asked))
                self._describing[asked] = task
                task.add_done_callback(lambda done: self._finish_describe(asked, done))
                self._waits.own(task)
            meta = await self._waits.bounded(task)
        except UpstreamError as exc:
            if exc.transient and held is not None and now - held[1] <= self._max_stale:
                return held[0]  # stale-if-error, as for values
            raise
        if self.caching:
            self.metadata.put(meta, self._clock(), asked_as=secret_id)
            if meta.arn in self._keys_by_arn:
                await self.confirm(meta)  # upstream vouched: cached entries get its stages and the time
        return meta

    async def list_page(
        self, filters: Sequence[Mapping[str, Any]], max_results: int, next_token: str | None
    ) -> tuple[list[SecretMeta], str | None]:
        """One ListSecrets page upstream (no cache: it answers "which secrets", not "what value"), bounded."""
        self._waits.refuse_when_stopping()
        task = self._waits.own(asyncio.ensure_future(self._source.list_page(filters, max_results, next_token)))
        return await self._waits.bounded(task)

    def _finish_describe(self, asked: str, task: asyncio.Task[SecretMeta]) -> None:
        self._describing.pop(asked, None)
        if not task.cancelled():
            task.exception()

    async def peek(self, secret_id: str, selector: Selector) -> Entry | None:
        """The cached entry, fresh or not, without touching upstream or LRU order."""
        arn = self._aliases.get(secret_id)
        if arn is None:
            return None
        entry: Entry | None = await self._store.get(_key(arn, selector))
        return entry

    async def entries(self, arn: str) -> list[tuple[str, Entry]]:
        """Every (key, entry) cached for one secret."""
        found = []
        for key in list(self._keys_by_arn.get(arn, ())):
            entry: Entry | None = await self._store.get(key)
            if entry is not None:
                found.append((key, entry))
        return found

    async def ages(self) -> list[float]:
        """Seconds since confirmation of every cached entry (for the staleness histogram)."""
        now = self._clock()
        ages = []
        for key in list(self._lru):
            entry: Entry | None = await self._store.get(key)
            if entry is not None:
                ages.append(now - entry.confirmed_at)
        return ages

    def fresh(self, secret_id: str, selector: Selector) -> FreshHit | None:
        """The cached entry when :meth:`get` would answer it as a plain ``hit``, else None; changes nothing.

        Synchronous, for the hot path (:mod:`agent.server.fastpath`): everything
        else (a miss, an entry to revalidate, a recorded failure, a version id
        answered from another entry) is left to :meth:`get`. A caller that serves
        the value calls :meth:`count_hit` so the LRU order and hit count match
        what :meth:`get` would have done; it may keep the hit and serve it again
        for as long as :meth:`age_of` gives an age.
        """
        arn = self._aliases.get(secret_id) if self._ttl > 0 else None
        if arn is None:
            return None
        key = _key(arn, selector)
        # aiocache's in-memory backend keeps values in a plain dict (no namespace, no serializer here).
        entry: Entry | None = self._store._cache.get(key)
        if entry is None:
            return None
        hit = FreshHit(secret_id, arn, key, weakref.ref(entry), expires=selector.version_id is None)
        return hit if self.age_of(hit) is not None else None

    def age_of(self, hit: FreshHit) -> float | None:
        """Seconds since upstream vouched for ``hit`` while :meth:`fresh` would still find it, else None.

        Any change the hit rests on ends it: the id now names another ARN, the
        entry was replaced (its stages moved, a rotation, an eviction), a
        failure was recorded on it, or (a stage) it aged past the TTL. A
        confirmation that changes nothing keeps the entry, only younger.
        """
        entry = hit.entry_ref()
        if entry is None or entry.error is not None or self._store._cache.get(hit.key) is not entry:
            return None
        if self._aliases.get(hit.secret_id) != hit.arn:
            return None
        age = self._clock() - entry.confirmed_at
        return None if hit.expires and age >= self._ttl else age

    def count_hit(self, hit: FreshHit) -> None:
        """Record a hit :meth:`fresh` found and the caller served (LRU order, the lookup observer)."""
        if hit.key in self._lru:
            self._lru.move_to_end(hit.key)
        self._observe("hit")

    async def get(self, secret_id: str, selector: Selector, *, refresh: bool = False) -> Lookup:
        """Return the value: cached when fresh (or while revalidating), else from upstream (single flight).

        Raises :class:`~agent.core.errors.UpstreamError` when upstream fails (or
        misses the read deadline) and no cached value may stand in for it.
        """
        now = self._clock()
        arn = self._aliases.get(secret_id) if self.caching else None
        key = _key(arn, selector) if arn is not None else None
        entry: Entry | None = await self._store.get(key) if key is not None else None
        flight: Flight = (secret_id, selector.cache_suffix)  # also the key of its failure records
        if entry is None and arn is not None and not refresh and selector.version_id and not selector.version_stage:
            # A version id names immutable content: any cached entry holding that version answers.
            entry = await self._holding(arn, selector.version_id, now)
            if entry is not None and key is not None:
                await self.put(entry.value, selector, confirmed_at=entry.confirmed_at)
                self._observe("hit")
                return Lookup(entry.value, "hit", now - entry.confirmed_at)
        if entry is not None and key is not None:
            if entry.error is not None:
                await self.forget(entry.value.arn)
                self._observe("error")
                raise entry.error
            age = now - entry.confirmed_at
            if not refresh and (selector.version_id is not None or age < self._ttl):
                self._lru.move_to_end(key)
                self._observe("hit")
                return Lookup(entry.value, "hit", age)
            within = age <= self._max_stale and (self._swr is None or age <= self._ttl + self._swr)
            if not refresh and within and self.failures.blocked(flight) is None and not self._waits.stopping:
                self._revalidate_in_background(flight, secret_id, selector, entry)
                self._lru.move_to_end(key)
                self._observe("revalidating")
                return Lookup(entry.value, "revalidating", age)
        elif not refresh and self.caching:  # with caching off every read asks upstream
            missing = self.failures.missing(flight)
            if missing is not None:
                self._observe("negative")
                raise missing
        blocked = self.failures.blocked(flight)
        if blocked is not None:
            return self._stale_or_raise(entry, blocked, now)
        work: Callable[[], Awaitable[tuple[SecretValue, Outcome]]]
        if entry is not None and not refresh:  # past the revalidation window: confirm before serving
            held = entry
            work = lambda: self._revalidate(secret_id, selector, held)  # noqa: E731
        else:
            previous = entry.value.version_id if entry is not None else None
            how: Outcome = "refresh" if refresh else "miss"
            work = lambda: self._load(secret_id, selector, how, previous)  # noqa: E731
        # refreshNow never joins a call started before it: it asks upstream itself.
        run_as: Flight = (*flight, "refresh") if refresh else flight
        try:
            value, outcome = await self._waits.bounded(self._flight(run_as, work, flight))
        except UpstreamError as exc:
            self.failures.note(flight, exc)
            if not exc.transient:
                self._observe("error")
                raise
            return self._stale_or_raise(entry, exc, now)
        self.failures.clear(flight)
        self._observe(outcome)
        return Lookup(value, outcome, 0.0)

    async def _holding(self, arn: str, version_id: str, now: float) -> Entry | None:
        """A cached entry of ``arn`` holding version ``version_id``, with no recorded failure, within max_stale.

        Its stages and confirmation time come along (a copy is no fresher than its source).
        """
        for _key, entry in await self.entries(arn):
            fresh_enough = now - entry.confirmed_at <= self._max_stale
            if entry.value.version_id == version_id and entry.error is None and fresh_enough:
                return entry
        return None

    def _stale_or_raise(self, entry: Entry | None, error: UpstreamError, now: float) -> Lookup:
        if entry is not None and entry.error is None and now - entry.confirmed_at <= self._max_stale:
            self.serving_stale[entry.value.arn] = now
            self._observe("stale")
            return Lookup(entry.value, "stale", now - entry.confirmed_at)
        self._observe("error")
        raise error

    def _flight(
        self, flight: Flight, work: Callable[[], Awaitable[tuple[SecretValue, Outcome]]], records: Flight
    ) -> asyncio.Task[tuple[SecretValue, Outcome]]:
        """The upstream call for ``flight``: the one running, or a new one (none once stopping).

        A call that succeeds clears the failure records under ``records`` itself,
        so one that answers after every reader gave up leaves no stale backoff.
        """
        task = self._inflight.get(flight)
        if task is None:
            self._waits.refuse_when_stopping()

            async def call() -> tuple[SecretValue, Outcome]:
                result = await work()
                self.failures.clear(records)
                return result

            task = asyncio.ensure_future(call())
            self._inflight[flight] = task
            task.add_done_callback(lambda done: self._finish(flight, done))
            self._waits.own(task)
        return task

    def _revalidate_in_background(self, flight: Flight, secret_id: str, selector: Selector, entry: Entry) -> None:
        if flight not in self._inflight:
            self._flight(flight, lambda: self._revalidate_quietly(flight, secret_id, selector, entry), flight)

    async def _revalidate_quietly(
        self, flight: Flight, secret_id: str, selector: Selector, entry: Entry
    ) -> tuple[SecretValue, Outcome]:
        """A background revalidation records its own failures: nobody may be waiting for it."""
        try:
            return await self._revalidate(secret_id, selector, entry)
        except UpstreamError as exc:
            self.failures.note(flight, exc)
            if not exc.transient:
                await self.fail(entry.value.arn, exc)  # surfaced by the next read, never hidden
            raise

    async def stop(self) -> None:
        """Shutdown: readers stop waiting on upstream at once; upstream calls still running are cancelled.

        No upstream call starts after this (reads get the cached value, or 503).
        """
        await self._waits.stop()

    def _finish(self, flight: Flight, task: asyncio.Task[tuple[SecretValue, Outcome]]) -> None:
        self._inflight.pop(flight, None)
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter went away

    async def _load(
        self, secret_id: str, selector: Selector, outcome: Outcome, previous: str | None = None
    ) -> tuple[SecretValue, Outcome]:
        value = await self._source.get_secret_value(secret_id, selector)
        await self.put(value, selector, asked_as=secret_id)
        # Inside the flight: reported once however many readers shared it.
        moved = previous is not None and selector.version_id is None and value.version_id != previous
        if moved:
            self.rotations.publish(Rotation(value, previous, "refreshNow" if outcome == "refresh" else "read"))
        return value, outcome

    async def _revalidate(self, secret_id: str, selector: Selector, entry: Entry) -> tuple[SecretValue, Outcome]:
        """DescribeSecret; re-read only if the asked stage now points at another version."""
        meta = await self._source.describe(entry.value.arn)
        stage = selector.version_stage or AWSCURRENT
        if meta.version_for_stage(stage) == entry.value.version_id:
            await self.confirm(meta)
            refreshed = await self.peek(entry.value.arn, selector)
            return (refreshed.value if refreshed else entry.value), "revalidated"
        return await self._load(entry.value.arn, selector, "miss", entry.value.version_id)

    async def put(
        self,
        value: SecretValue,
        selector: Selector,
        *,
        asked_as: str | None = None,
        recent: bool = True,
        confirmed_at: float | None = None,
    ) -> None:
        """Store ``value`` under its ARN and ``selector``; register its aliases; evict LRU.

        ``recent=False`` files the entry as least recently used: it is kept only
        while there is room, and never pushes out an entry someone reads.
        """
        if not self.caching:
            return
        arn = value.arn
        if confirmed_at is None:  # fresh from upstream (a copy keeps its source's age, and staleness)
            self.serving_stale.pop(arn, None)
        self._names[arn] = value.name
        for alias in (value.name, arn, partial_arn(arn), asked_as):
            if alias:
                self._aliases[alias] = arn
        key = _key(arn, selector)
        confirmed = self._clock() if confirmed_at is None else confirmed_at
        await self._store.set(key, Entry(value=value, confirmed_at=confirmed))
        self._lru[key] = None
        self._lru.move_to_end(key, last=recent)
        self._keys_by_arn.setdefault(arn, set()).add(key)
        while len(self._lru) > self._max:
            oldest, _ = self._lru.popitem(last=False)
            await self._evict(oldest)

    async def confirm(self, meta: SecretMeta) -> None:
        """Upstream vouched for this secret's metadata: refresh stages and confirmation times.

        A stage entry whose stage has moved to another version is dropped (the
        next read fetches it); the ``AWSCURRENT`` entry is left alone when it
        moved, since the caller re-reads and calls :meth:`rotate`.
        """
        now = self._clock()
        self.serving_stale.pop(meta.arn, None)
        if self.caching:
            self.metadata.put(meta, now)
        for key, entry in await self.entries(meta.arn):
            suffix = key.rpartition("|")[2]
            value = entry.value
            stages = meta.versions_to_stages.get(value.version_id)
            if stages is None:
                await self._drop(key)  # the version itself is gone upstream
                continue
            if suffix.startswith("stage:") and suffix[6:] not in stages:
                if suffix[6:] != AWSCURRENT:
                    await self._drop(key)
                continue
            if stages != value.version_stages:
                value = dataclasses.replace(value, version_stages=stages)
                await self._store.set(key, Entry(value=value, confirmed_at=now))
            else:
                # Vouched for as it is (most passes): the same entry, confirmed now. Nothing new is
                # left behind per pass, and hot-path tickets on it hold (they read the time from it).
                entry.confirmed_at, entry.error = now, None

    async def rotate(self, meta: SecretMeta, current: SecretValue) -> str | None:
        """Install a new ``AWSCURRENT`` value; keep the old one readable as ``AWSPREVIOUS``.

        Returns the version id that was current before, if one was cached.
        """
        old = await self._store.get(_key(meta.arn, STAGE_CURRENT))
        previous_id = old.value.version_id if old is not None else None
        await self.put(current, STAGE_CURRENT)
        if old is not None and AWSPREVIOUS in meta.versions_to_stages.get(previous_id or "", ()):
            # Kept while there is room: an old version must not evict a current one.
            await self.put(old.value, STAGE_PREVIOUS, recent=False)
        await self.confirm(meta)
        return previous_id

    async def fail(self, arn: str, error: UpstreamError) -> None:
        """Record a non-transient failure: the next read of this secret raises ``error``."""
        kept = detached(error)
        for key, entry in await self.entries(arn):
            entry.error = kept
            await self._store.set(key, entry)

    async def forget(self, arn: str) -> None:
        """Drop every entry of one secret."""
        for key in list(self._keys_by_arn.get(arn, ())):
            await self._drop(key)

    async def _drop(self, key: str) -> None:
        self._lru.pop(key, None)
        await self._evict(key)

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
                self._names.pop(arn, None)
                self.serving_stale.pop(arn, None)
                for alias in [a for a, target in self._aliases.items() if target == arn]:
                    del self._aliases[alias]
