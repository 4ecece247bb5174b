"""The rotation watch: history, health and read usage of the cached secrets, kept up by one task.

:class:`RotationWatch` owns the three books (:mod:`agent.cache.history`,
:mod:`agent.cache.health`, :mod:`agent.cache.usage`) and feeds them:

* every published :class:`~agent.cache.rotations.Rotation` goes into the
  history and ends a ``failed`` state (a new ``AWSCURRENT`` was seen);
* ``RotationFailed``/``RotationAbandoned`` events mark a secret ``failed``;
* after prefetch (never before: readiness does not wait for it) the history
  of each prefetched secret is seeded with one ListSecretVersionIds call,
  one call at a time, through the same pool, pacer and metrics as every
  other upstream call, spaced by ``seed_spacing_seconds`` (the fleet's share
  of the API's quota, so ten thousand agents started together do not
  throttle the account) and given up at the first throttle: history is a
  nicety, never worth slowing reads;
* every ``interval`` seconds each cached secret's health is assessed from
  the metadata the cache already holds. A version newly seen labelled
  ``AWSPENDING`` costs one ListSecretVersionIds, once, to learn its
  CreatedDate (the grace is counted from it); until then (or if the call
  fails) the time the agent first saw it stands in.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from agent.cache.health import HealthBook, Signals, assess
from agent.cache.history import Change, RotationHistory
from agent.cache.rotations import Rotation
from agent.cache.store import STAGE_CURRENT, Entry, SecretCache
from agent.cache.usage import ReadUsage
from agent.core.errors import UpstreamError, UpstreamThrottled
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.core.types import AWSCURRENT, AWSPENDING
from agent.upstream.source import SecretMeta, SecretSource, VersionInfo

log = get_logger("agent.cache.watch")

MAX_PENDING_TRACKED = 10_000


class RotationWatch:
    """History, health and usage of the agent's cached secrets (see the module docstring)."""

    def __init__(
        self,
        cache: SecretCache,
        source: SecretSource,
        metrics: Metrics,
        *,
        grace_seconds: float,
        interval_seconds: float,
        stale_after_seconds: float | None,
        seed_history: bool = True,
        seed_spacing_seconds: float = 0.0,
        on_seeded: Callable[[], object] | None = None,
        history_per_secret: int = 50,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._source = source
        self._grace = grace_seconds
        self._interval = interval_seconds
        self._stale_after = stale_after_seconds
        self._seed_history = seed_history
        self._seed_spacing = seed_spacing_seconds
        self._on_seeded = on_seeded  # e.g. give the replies' freed heap pages back
        self._clock = clock
        self._wall = wall_clock
        self.history = RotationHistory(per_secret=history_per_secret)
        self.usage = ReadUsage(self.history, wall_clock=wall_clock)
        self.health = HealthBook(lambda state, count: metrics.secret_health.labels(state).set(count))
        self._failed_events: dict[str, float] = {}  # ARN → when a RotationFailed/Abandoned event came
        # (ARN, pending version) → its CreatedDate (or first seen, until known).
        self._pending: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._asked: set[tuple[str, str]] = set()
        self._lookups: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ inputs

    def observe(self, rotation: Rotation) -> None:
        """A rotation the agent installed (a :class:`~agent.cache.rotations.RotationFeed` subscriber)."""
        self._failed_events.pop(rotation.value.arn, None)  # a new AWSCURRENT ends a failed rotation
        self.history.observe(rotation)

    def rotation_failed(self, arn: str) -> None:
        """A RotationFailed/RotationAbandoned event named this (cached) secret."""
        self._failed_events[arn] = self._wall()

    def restore(self, arn: str, change: Change) -> None:
        """A change recorded by an earlier run (the audit file)."""
        self.history.restore(arn, change)

    # ------------------------------------------------------------------ the task

    async def run(self, prefetched: asyncio.Event, required: Callable[[], Iterable[str]]) -> None:
        """Seed history once prefetch is done, then assess health every interval, until cancelled."""
        try:
            await prefetched.wait()
            if self._seed_history:
                try:
                    await self.seed(sorted(required()))
                except Exception:  # a bug in the seed must not stop health watching: history only
                    log.exception("history_seed_crashed")
                if self._on_seeded is not None:
                    self._on_seeded()
            while True:
                try:
                    await self.assess_all()
                except Exception:  # a bug in one pass must not freeze every secret's health for good
                    log.exception("health_pass_crashed")
                await asyncio.sleep(self._interval)
        finally:
            for task in list(self._lookups):
                task.cancel()

    async def seed(self, arns: Iterable[str]) -> None:
        """One ListSecretVersionIds per secret, one at a time, spaced; a refusal skips one, a throttle the rest."""
        added = 0
        for index, arn in enumerate(arns):
            if index and self._seed_spacing:
                await asyncio.sleep(self._seed_spacing * random.uniform(0.5, 1.5))  # noqa: S311 - spacing
            try:
                versions = await self._versions(arn)
            except UpstreamError as exc:  # throttled: the fleet is over its share; the rest stays unseeded
                log.warning("history_seed_stopped", error=exc.code, seeded=index)
                break
            if versions is not None:
                added += self.history.seed(arn, versions)
        log.info("history_seeded", changes=added)

    async def _versions(self, arn: str) -> list[VersionInfo] | None:
        """The secret's versions (None when upstream refused); raises only when throttled."""
        try:
            versions = await self._source.list_versions(arn)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamThrottled):
                raise
            log.warning("history_seed_failed", arn=arn, error=exc.code)
            return None
        for version in versions:
            if AWSPENDING in version.stages and AWSCURRENT not in version.stages and version.created is not None:
                self._pending[(arn, version.version_id)] = version.created
                self._asked.add((arn, version.version_id))
        return versions

    # ------------------------------------------------------------------ health

    async def assess_all(self) -> None:
        """Assess every cached secret now, update the gauge, log transitions."""
        now, mono = self._wall(), self._clock()
        arns = self._cache.arns()
        pending: set[tuple[str, str]] = set()
        for arn in arns:
            pending.update((arn, version) for version in await self._assess(arn, now, mono))
        self.health.retain(arns)
        self.health.publish()
        self._forget_pending(pending)

    def last_changed(self, arn: str, meta: SecretMeta | None) -> float | None:
        """When AWSCURRENT last moved: the latest change the history holds, or upstream's LastRotatedDate if later."""
        seen = self.history.last_changed(arn)
        if meta is not None and meta.last_rotated is not None:
            return max(seen or 0.0, meta.last_rotated)
        return seen

    async def _assess(self, arn: str, now: float, mono: float) -> list[str]:
        """Assess one secret; returns its versions labelled AWSPENDING (and not AWSCURRENT)."""
        held = self._cache.metadata.get(arn)
        meta = held[0] if held is not None else None
        pending: dict[str, float] = {}
        if meta is not None:
            for version, stages in meta.versions_to_stages.items():
                if AWSPENDING in stages and AWSCURRENT not in stages:
                    pending[version] = self._pending_created(arn, version, now)
        entry = await self._cache.peek(arn, STAGE_CURRENT)
        signals = Signals(
            meta=meta,
            last_changed=self.last_changed(arn, meta),
            failed_event_at=self._failed_events.get(arn),
            pending_created=pending,
            stale=self._stale(arn, entry, mono),
            deleted=_deleted(entry),
            current_seen_at=self.history.last_changed(arn),
        )
        health, reason = assess(signals, now, self._grace)
        self.health.update(arn, self._cache.name_of(arn) or arn, health, reason, now)
        return list(pending)

    def _stale(self, arn: str, entry: Entry | None, mono: float) -> bool:
        """Served past an upstream failure: a stale read since the last confirmation, or unconfirmed too long."""
        if arn in self._cache.serving_stale:
            return True
        return self._stale_after is not None and entry is not None and mono - entry.confirmed_at > self._stale_after

    def _pending_created(self, arn: str, version: str, now: float) -> float:
        key = (arn, version)
        created = self._pending.get(key)
        if created is None:
            created = self._pending[key] = now  # stands in until the lookup answers
            while len(self._pending) > MAX_PENDING_TRACKED:
                self._pending.popitem(last=False)
        if key not in self._asked:
            self._asked.add(key)
            task = asyncio.ensure_future(self._pending_versions(arn))
            self._lookups.add(task)  # kept to be cancelled at shutdown
            task.add_done_callback(self._lookups.discard)
        return created

    async def _pending_versions(self, arn: str) -> None:
        try:
            await self._versions(arn)
        except UpstreamError as exc:  # throttled: first-seen time stands in for the CreatedDate
            log.warning("pending_version_lookup_failed", arn=arn, error=exc.code)

    def _forget_pending(self, pending: set[tuple[str, str]]) -> None:
        """Forget versions no longer pending (or no longer cached): one entry per rotation would never go."""
        for key in [key for key in self._pending if key not in pending]:
            del self._pending[key]
        self._asked &= pending


def _deleted(entry: Entry | None) -> bool:
    """Upstream said so: the entry carries ResourceNotFound, or the marked-for-deletion refusal."""
    error = entry.error if entry is not None else None
    return error is not None and (error.code == "ResourceNotFoundException" or "deletion" in error.message)
