"""``ParameterCache``: Parameter Store values, kept as the secret cache keeps secrets.

Keys. One entry per (name as asked, selector, decryption): ``/app/db`` read
with ``withDecryption=true`` and with ``false`` are two entries (a SecureString
answers its ciphertext to the second), and ``/app/db:3`` or ``/app/db:blue``
are entries of their own. A value that is not a SecureString is filed under
both decryption flags, since GetParameter ignores the flag for it.
``max_entries`` bounds the entries (least recently used evicted).

Freshness. A *version* entry (``name:3``) never expires: a version's value is
immutable. Other entries (latest, or a label) are served for ``ttl_seconds``
after upstream last confirmed them, then re-read (GetParameter) before they
are served. In poll mode :class:`ParameterRefresher` confirms latest entries
every ``refresh.parameter_interval_seconds`` with DescribeParameters (versions
only: no value read, nothing decrypted) and re-reads only those whose version
moved. A label moved to another version does not change the parameter's
version, so label entries are confirmed by their TTL only.

Failures, single flight, deadlines: as :class:`~agent.cache.store.SecretCache`.
Concurrent misses share one upstream call that no reader can cancel; a reader
waits for it at most ``read_deadline_seconds`` (then 504, or the stale value)
and not at all after :meth:`ParameterCache.stop`. A transient failure serves
the cached value for up to ``max_stale_seconds`` (``stale``) and backs the key
off; ``ParameterNotFound`` is remembered for ``negative_ttl_seconds``; both
records live in a bounded :class:`~agent.cache.failures.FailureBook`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.cache.failures import FailureBook
from agent.cache.store import MIN_FAILURE_RECORDS, LookupObserver, Outcome
from agent.cache.waits import UpstreamWaits
from agent.core.errors import UpstreamError
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.upstream.ssm import ParameterReads, ParameterValue, split_selector

log = get_logger("agent.parameters")

# (name as asked, selector or "", "1" decrypted / "0" not)
ParamKey = tuple[str, str, str]
JITTER = 0.1


def param_key(name: str, selector: str | None, decrypt: bool) -> ParamKey:
    """The cache key of one read."""
    return (name, selector or "", "1" if decrypt else "0")


def is_version(selector: str | None) -> bool:
    """A numeric selector names an immutable version; anything else is a label."""
    return bool(selector) and str(selector).isdigit()


@dataclass
class ParamEntry:
    """A cached parameter value and when upstream last vouched for it."""

    value: ParameterValue
    confirmed_at: float


@dataclass(frozen=True)
class ParamLookup:
    """What a read got: the value, how, and how long since upstream confirmed it."""

    value: ParameterValue
    outcome: Outcome
    age: float


class ParameterCache:
    """In-memory Parameter Store cache in front of a :class:`~agent.upstream.ssm.ParameterReads`."""

    def __init__(
        self,
        source: ParameterReads,
        *,
        ttl_seconds: float,
        max_entries: int,
        max_stale_seconds: float,
        read_deadline_seconds: float | None = None,
        negative_ttl_seconds: float = 0,
        clock: Callable[[], float] = time.monotonic,
        observe: LookupObserver | None = None,
    ) -> None:
        self.source = source
        self._ttl = ttl_seconds
        self._max = max_entries
        self._max_stale = max_stale_seconds
        self._waits = UpstreamWaits(read_deadline_seconds, service="Systems Manager")
        self._clock = clock
        self._observe = observe or (lambda _outcome: None)
        self._entries: OrderedDict[ParamKey, ParamEntry] = OrderedDict()
        self._inflight: dict[tuple[str, ...], asyncio.Task[ParameterValue]] = {}
        self.failures = FailureBook(
            max_records=max(MIN_FAILURE_RECORDS, max_entries),
            negative_ttl_seconds=negative_ttl_seconds,
            clock=clock,
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def caching(self) -> bool:
        """False when ``ttl_seconds`` is 0: every read goes upstream (still coalesced)."""
        return self._ttl > 0

    def peek(self, key: ParamKey) -> ParamEntry | None:
        """The cached entry, fresh or not, without touching upstream or LRU order."""
        return self._entries.get(key)

    def latest_keys(self) -> list[ParamKey]:
        """Keys of entries that follow the latest version (no selector)."""
        return [key for key in self._entries if not key[1]]

    async def get(self, name: str, *, decrypt: bool, refresh: bool = False) -> ParamLookup:
        """Return the parameter (``name`` may carry ``:version`` or ``:label``): cached, or from upstream.

        Raises :class:`~agent.core.errors.UpstreamError` when upstream fails (or
        misses the read deadline) and no cached value may stand in for it.
        """
        base, selector = split_selector(name)
        key = param_key(base, selector, decrypt)
        now = self._clock()
        entry = self._entries.get(key) if self.caching else None
        if entry is not None and not refresh:
            age = now - entry.confirmed_at
            if is_version(selector) or age < self._ttl:
                self._entries.move_to_end(key)
                self._observe("hit")
                return ParamLookup(entry.value, "hit", age)
        elif entry is None and not refresh and self.caching:
            missing = self.failures.missing(key)
            if missing is not None:
                self._observe("negative")
                raise missing
        blocked = self.failures.blocked(key)
        if blocked is not None:
            return self._stale_or_raise(entry, blocked, now)
        how: Outcome = "refresh" if refresh else ("revalidated" if entry is not None else "miss")
        try:
            value = await self._waits.bounded(self._flight(key, name, decrypt, refresh))
        except UpstreamError as exc:
            self.failures.note(key, exc)
            if not exc.transient:
                self._observe("error")
                if entry is not None:
                    self._entries.pop(key, None)  # a hard failure is never hidden behind the cached value
                raise
            return self._stale_or_raise(entry, exc, now)
        self.failures.clear(key)
        self._observe(how)
        return ParamLookup(value, how, 0.0)

    def _stale_or_raise(self, entry: ParamEntry | None, error: UpstreamError, now: float) -> ParamLookup:
        if entry is not None and now - entry.confirmed_at <= self._max_stale:
            self._observe("stale")
            return ParamLookup(entry.value, "stale", now - entry.confirmed_at)
        self._observe("error")
        raise error

    def _flight(self, key: ParamKey, name: str, decrypt: bool, refresh: bool) -> asyncio.Task[ParameterValue]:
        flight: tuple[str, ...] = (*key, "refresh") if refresh else key
        task = self._inflight.get(flight)
        if task is None:
            self._waits.refuse_when_stopping()

            async def call() -> ParameterValue:
                value = await self.source.get_parameter(name, decrypt=decrypt)
                self.put(key, value)
                self.failures.clear(key)
                return value

            task = asyncio.ensure_future(call())
            self._inflight[flight] = task
            task.add_done_callback(lambda done: self._finish(flight, done))
            self._waits.own(task)
        return task

    def _finish(self, flight: tuple[str, ...], task: asyncio.Task[ParameterValue]) -> None:
        self._inflight.pop(flight, None)
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter went away

    async def stop(self) -> None:
        """Shutdown: readers stop waiting on upstream at once; upstream calls still running are cancelled."""
        await self._waits.stop()

    def put(self, key: ParamKey, value: ParameterValue, *, recent: bool = True) -> None:
        """Store ``value`` under ``key`` (and under the other decryption flag when that cannot differ)."""
        if not self.caching:
            return
        now = self._clock()
        keys = [key]
        if not value.secure:
            keys.append((key[0], key[1], "0" if key[2] == "1" else "1"))
        for each in keys:
            self._entries[each] = ParamEntry(value, now)
            self._entries.move_to_end(each, last=recent)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def confirm(self, key: ParamKey) -> None:
        """Upstream vouched for this entry (its version has not moved)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.confirmed_at = self._clock()

    def drop(self, key: ParamKey) -> None:
        """Forget one entry."""
        self._entries.pop(key, None)


class ParameterRefresher:
    """Prefetch by names and paths, then change detection by versions (poll mode)."""

    def __init__(
        self,
        cache: ParameterCache,
        *,
        names: Sequence[str],
        paths: Sequence[str],
        interval_seconds: float,
        poll: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self._cache = cache
        self._names = tuple(names)
        self._paths = tuple(paths)
        self._interval = interval_seconds
        self._poll = poll
        self._metrics = metrics
        self.prefetched = asyncio.Event()
        self.passes = 0
        # Told of every parameter whose new version a pass read (templates re-render).
        self.listeners: list[Callable[[ParameterValue], None]] = []

    async def run(self) -> None:
        """Prefetch once (readiness waits for it), then poll until cancelled."""
        try:
            await self.prefetch()
        finally:
            self.prefetched.set()
        if not self._poll:
            return
        while True:
            await asyncio.sleep(self._interval * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311 - jitter
            try:
                await self.poll_once()
            except UpstreamError as exc:
                log.warning("parameter_poll_failed", error=exc.code, reason=exc.message)

    async def prefetch(self) -> None:
        """Load the listed names (GetParameters, 10 a call) and every parameter under the listed paths."""
        cache, source = self._cache, self._cache.source
        if self._names:
            batch = await source.get_parameters(self._names, decrypt=True)
            for value in batch.values:
                cache.put(param_key(value.name, None, True), value, recent=False)
            for name in batch.invalid:
                log.warning("parameter_prefetch_failed", parameter=name, error="ParameterNotFound")
            for name, error in batch.errors.items():
                log.warning("parameter_prefetch_failed", parameter=name, error=error.code, reason=error.message)
        for path in self._paths:
            try:
                values = await source.get_parameters_by_path(path, decrypt=True)
            except UpstreamError as exc:
                log.warning("parameter_prefetch_failed", path=path, error=exc.code, reason=exc.message)
                continue
            for value in values:
                cache.put(param_key(value.name, None, True), value, recent=False)
        log.info("parameters_prefetched", entries=len(cache))

    async def poll_once(self) -> int:
        """One change-detection pass over the cached latest entries; returns how many changed.

        DescribeParameters (50 names a call) gives each parameter's current
        version; only entries whose version moved are re-read, and a parameter
        that no longer exists is dropped.
        """
        cache = self._cache
        keys = cache.latest_keys()
        names = sorted({entry.value.name for key in keys if (entry := cache.peek(key)) is not None})
        if not names:
            self.passes += 1
            return 0
        current = await cache.source.describe(names)
        changed = 0
        for key in keys:
            entry = cache.peek(key)
            if entry is None:
                continue
            meta = current.get(entry.value.name)
            if meta is None:
                cache.drop(key)
                continue
            if meta.version == entry.value.version:
                cache.confirm(key)
                continue
            try:
                value = await cache.source.get_parameter(key[0], decrypt=key[2] == "1")
            except UpstreamError as exc:
                log.warning("parameter_refresh_failed", parameter=key[0], error=exc.code, reason=exc.message)
                continue
            cache.put(key, value)
            changed += 1
            log.info(
                "parameter_changed", parameter=value.name, old_version=entry.value.version, new_version=value.version
            )
            if self._metrics is not None:
                self._metrics.rotations.labels("parameter").inc()
            for listener in self.listeners:
                listener(value)
        self.passes += 1
        return changed
