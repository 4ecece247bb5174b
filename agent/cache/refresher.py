"""Prefetch, then keep cached secrets fresh at the smallest upstream cost.

Prefetch. Explicit ids go straight to BatchGetSecretValue (20 per call). Name
prefixes and tags are resolved with ListSecrets first (its entries carry tags,
so a ``key=value`` tag is matched exactly), then fetched by ARN the same way.
A failure for one id is logged by name and does not stop the rest; transient
failures are retried by later cycles.

Change detection (``refresh.mode = "poll"``). Every ``interval_seconds`` (±10%
jitter, so a fleet does not call in step) one ListSecrets pass reads the
``SecretVersionsToStages`` of the cached secrets: 100 secrets per call, no
values. Secrets whose ``AWSCURRENT`` version is unchanged are *confirmed*
(their TTL restarts, no value is read); only secrets whose ``AWSCURRENT`` moved
are re-read (GetSecretValue, or BatchGetSecretValue for several). Idle cost:
``ceil(N / 100)`` calls per interval against a TTL cache's ``N`` per TTL, i.e.
a tenth at the defaults (N ≤ 100, 30 s vs 300 s) for N ≥ 50.

Why the bound holds although ListSecrets is eventually consistent. AWS
documents ListSecrets as possibly lagging recent changes; DescribeSecret reads
the secret itself. Three things keep staleness bounded anyway:

1. a lagging list only delays detection to a later cycle: staleness is
   ``interval + lag``, and the lag is seconds in practice;
2. secrets whose ``NextRotationDate`` is within the rotation window (from one
   interval before it until ``ROTATION_WINDOW_SECONDS`` after) are checked with
   DescribeSecret on every cycle, so scheduled rotations never depend on the
   list at all;
3. every ``ROUND_ROBIN_EVERY``-th cycle one more cached secret, round-robin,
   is checked with DescribeSecret: an independent path that does not trust
   the list at all, at a quarter of a call per cycle (a full call per cycle
   would double the idle cost of small caches for a rare failure mode).

A secret missing from the list (deleted, or scheduled for deletion) is
described individually; a hard error (ResourceNotFound, AccessDenied, marked
for deletion) is recorded on the entry and surfaces on its next read.

Fleets. How each pass asks (ListSecrets, or DescribeSecret per cached secret
when the fleet's share of the ListSecrets quota is too small or ListSecrets
throttles), how long it waits, and how start-up is spread are decided by the
:class:`~agent.cache.planner.Planner` (``[fleet]`` settings). Prefetch and
re-reads fall back from BatchGetSecretValue to GetSecretValue, one secret a
call, for the ids a throttled batch did not answer.

Failures of a whole pass back off exponentially with full jitter.
``refresh.mode = "ttl"`` runs no background pass: entries are revalidated on
read once their TTL has passed, as AWS's agent does.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence

from agent.cache.planner import (
    BATCH_GET_SECRET_VALUE,
    DESCRIBE_SECRET,
    LIST_SECRETS,
    PassPlan,
    Planner,
)
from agent.cache.rotations import How, Rotation
from agent.cache.store import STAGE_CURRENT, SecretCache
from agent.config import PrefetchSettings, RefreshSettings
from agent.core.errors import UpstreamError, UpstreamRejected, UpstreamThrottled
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.core.types import CURRENT, SecretValue, looks_like_arn, partial_arn
from agent.upstream.source import LIST_PAGE_SIZE, NAME_FILTER_VALUES, BatchResult, SecretMeta, SecretSource
from agent.upstream.throttle import Backoff

log = get_logger("agent.cache.refresher")

ROTATION_WINDOW_SECONDS = 900.0
ROUND_ROBIN_EVERY = 4  # passes between round-robin DescribeSecret checks
EVENT_BURST_SECONDS = 5.0  # events this soon after a spread one are handled without waiting again


def matches(meta: SecretMeta, prefixes: Sequence[str], tags: Sequence[tuple[str, str | None]]) -> bool:
    """True when the secret's name has one of the prefixes or it carries one of the tags."""
    if any(meta.name.startswith(prefix) for prefix in prefixes):
        return True
    return any(key in meta.tags and (value is None or meta.tags[key] == value) for key, value in tags)


class Refresher:
    """Owns prefetch and background freshness of the cache."""

    def __init__(
        self,
        source: SecretSource,
        cache: SecretCache,
        settings: PrefetchSettings,
        refresh: RefreshSettings,
        *,
        max_stale_seconds: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        planner: Planner | None = None,
    ) -> None:
        self._source = source
        self._cache = cache
        self._settings = settings
        self._refresh = refresh
        self._max_stale = max_stale_seconds
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.prefetched = asyncio.Event()
        self.failed: dict[str, str] = {}
        self.required: set[str] = set()
        self._pending: list[str] = []  # prefetch ids that failed transiently
        self._round_robin = 0
        self._passes = 0
        self._list_plan = "all"
        self._list_calls: int | None = None  # what the last listing of the cached secrets cost
        self._planner = planner or Planner(interval=refresh.interval_seconds, clock=clock, rng=self._rng)
        self._plan: PassPlan | None = None
        self._event_spread_until = 0.0

    # ------------------------------------------------------------------ prefetch

    async def prefetch(self) -> None:
        """Fetch every configured secret once; set :attr:`prefetched` when done."""
        try:
            ids = list(dict.fromkeys(self._settings.secrets))
            if self._settings.name_prefixes or self._settings.tags:
                ids.extend(await self._resolve_filters())
            ids = list(dict.fromkeys(ids))
            loaded = await self._load(ids)
            if len(self.required) > self._cache.max_entries:
                log.warning(
                    "prefetch_exceeds_cache", prefetched=len(self.required), max_entries=self._cache.max_entries
                )
            log.info("prefetch_done", requested=len(ids), cached=loaded, failed=len(self.failed))
        finally:
            self.prefetched.set()

    async def _load(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        result = await self._fetch_current(ids)
        for value in result.values:
            await self._cache.put(value, CURRENT)
            self.required.add(value.arn)
        self._pending = []
        for secret_id, error in result.errors.items():
            self.failed[secret_id] = error.code
            if error.transient:
                self._pending.append(secret_id)
            log.warning("prefetch_failed", secret_id=secret_id, error=error.code, reason=error.message)
        for value in result.values:
            for asked in [i for i in self.failed if i in (value.name, value.arn)]:
                del self.failed[asked]
        return len(result.values)

    async def _fetch_current(self, ids: Sequence[str]) -> BatchResult:
        """AWSCURRENT of ``ids``: BatchGetSecretValue, then GetSecretValue for the ids a throttled batch left."""
        if self._planner.prefetch_via(len(ids)) == "get":
            return await self._get_each(ids, BatchResult())
        result = await self._source.batch_get(ids)
        throttled = [secret_id for secret_id, error in result.errors.items() if isinstance(error, UpstreamThrottled)]
        if not throttled:
            return result
        self._planner.note_throttled(BATCH_GET_SECRET_VALUE)
        log.warning("batch_throttled_fallback", secrets=len(throttled))
        for secret_id in throttled:
            del result.errors[secret_id]
        self._metrics.batch_fallbacks.inc(len(throttled))
        return await self._get_each(throttled, result)

    async def _get_each(self, ids: Sequence[str], result: BatchResult) -> BatchResult:
        for secret_id in ids:
            try:
                result.values.append(await self._source.get_secret_value(secret_id, CURRENT))
            except UpstreamError as exc:
                result.errors[secret_id] = exc
        return result

    async def _resolve_filters(self) -> list[str]:
        prefixes = self._settings.name_prefixes
        tags = self._settings.tags
        try:
            metas = await self._source.list_secrets(prefixes, [key for key, _ in tags])
        except UpstreamError as exc:
            log.warning("prefetch_list_failed", error=exc.code, reason=exc.message)
            return []
        return [meta.arn for meta in metas if matches(meta, prefixes, tags)]

    # ------------------------------------------------------------------ readiness

    async def ready(self) -> tuple[bool, str]:
        """Ready once prefetch ran, while no prefetched secret is past ``max_stale_seconds``."""
        if not self.prefetched.is_set():
            return False, "prefetch in progress"
        now = self._clock()
        for arn in self.required:
            entry = await self._cache.peek(arn, STAGE_CURRENT)
            if entry is not None and now - entry.confirmed_at > self._max_stale:
                return False, "a required secret is past cache.max_stale_seconds"
        return True, "ready"

    # ------------------------------------------------------------------ background loop

    async def run(self) -> None:
        """Prefetch (after a start-up delay that spreads a fleet), then (poll mode) detect changes until cancelled."""
        filtered = bool(self._settings.name_prefixes or self._settings.tags)
        delay = self._planner.startup_delay(max(len(set(self._settings.secrets)), int(filtered)))
        if delay > 0:
            log.info("startup_spread", delay_seconds=round(delay, 2), fleet_size=self._planner.fleet_size)
            await asyncio.sleep(delay)
        await self.prefetch()
        interval = float(self._refresh.interval_seconds)
        backoff = Backoff(base=interval, cap=max(10 * interval, 300.0), rng=self._rng)
        if self._refresh.mode != "poll" and not self._pending:
            return
        wait = self._jittered(interval)
        if self._refresh.mode == "poll":
            wait = self._planner.first_wait(self._plan_pass(len(self._cache.arns())).interval)
        while True:
            await asyncio.sleep(wait)
            try:
                if self._pending:
                    await self._load(list(self._pending))
                if self._refresh.mode == "poll":
                    await self.poll_once()
                elif not self._pending:
                    return
            except UpstreamError as exc:
                wait = max(self._jittered(interval), backoff.next_delay())
                log.warning("refresh_pass_failed", error=exc.code, transient=exc.transient, retry_in=round(wait, 1))
                continue
            except Exception:  # a bug must not end freshness for good: log it and keep polling
                wait = max(self._jittered(interval), backoff.next_delay())
                log.exception("refresh_pass_crashed", retry_in=round(wait, 1))
                continue
            backoff.reset()
            wait = self._jittered(interval)

    def _jittered(self, interval: float) -> float:
        """The wait before the next pass: the plan's interval (the configured one before any plan), jittered."""
        return self._planner.jittered(self._plan.interval if self._plan is not None else interval)

    def _plan_pass(self, cached: int) -> PassPlan:
        """Ask the planner for this pass's plan; log a change of plan or interval, and export it."""
        plan = self._planner.plan(cached, self._list_calls)
        previous, self._plan = self._plan, plan
        for how in ("list", "describe"):
            self._metrics.refresh_plan.labels(how).set(1 if how == plan.how else 0)
        self._metrics.refresh_interval.set(plan.interval)
        self._metrics.refresh_staleness_bound.set(plan.staleness_bound)
        if previous is None or (previous.how, round(previous.interval, 1)) != (plan.how, round(plan.interval, 1)):
            report = log.warning if plan.stretched else log.info
            report(
                "refresh_plan",
                plan=plan.how,
                interval_seconds=round(plan.interval, 1),
                staleness_bound_seconds=round(plan.staleness_bound, 1),
                calls_per_pass=plan.calls,
                cached=cached,
                fleet_size=self._planner.fleet_size,
                quota_share=self._planner.quota_share,
                reason=plan.reason,
            )
        return plan

    async def poll_once(self) -> None:
        """One change-detection pass over every cached secret."""
        arns = self._cache.arns()
        if not arns:
            return
        listed: dict[str, SecretMeta] = {}  # the describe plan: every cached secret is described below
        if self._plan_pass(len(arns)).how == "list":
            try:
                listed = await self._list(arns)
            except UpstreamThrottled:
                self._planner.note_throttled(LIST_SECRETS)
                # Planned again with listing held (and the fleet size the throttle implies): describe
                # now only if that fits this interval; else the next pass, at the stretched interval.
                if (plan := self._plan_pass(len(arns))).stretched or plan.how != "describe":
                    # Listing stays held past the next pass (its wait is at most the staleness bound): were the
                    # hold over first, that pass would list (and throttle) again, and no pass would ever describe.
                    self._planner.hold_for(LIST_SECRETS, 2 * plan.interval)
                    log.warning("list_throttled_waiting", cached=len(arns), retry_in=round(plan.interval, 1))
                    return
                log.warning("list_throttled_describing", cached=len(arns))
        moved: list[SecretMeta] = []
        direct = set(self._direct_checks(arns, listed))
        transient: UpstreamError | None = None
        for arn in arns:
            meta = listed.get(arn)
            if meta is None or arn in direct:
                try:
                    meta = await self._describe(arn)
                except UpstreamError as exc:  # transient: this secret waits, the others go on
                    if isinstance(exc, UpstreamThrottled):
                        self._planner.note_throttled(DESCRIBE_SECRET)
                    transient = exc
                    continue
                if meta is None:
                    continue
            if await self._moved(meta):
                moved.append(meta)
            else:
                await self._cache.confirm(meta)
        await self._reread(moved, how="poll")
        if transient is not None:
            raise transient  # the pass counts as failed, so it backs off
        self._metrics.poll_passes.inc()

    async def _list(self, arns: Sequence[str]) -> dict[str, SecretMeta]:
        """ListSecrets over the cached secrets, by the cheaper of two plans.

        "all" pages through the account and stops as soon as every cached ARN
        was seen; "named" asks for the cached names, ten per call. The plan
        switches to "named" when the account is much larger than the cache.
        """
        wanted = set(arns)
        if self._list_plan == "all":
            metas = await self._source.list_secrets(until=lambda seen: wanted <= seen.keys())
            pages = self._list_calls = max(1, math.ceil(len(metas) / LIST_PAGE_SIZE))
            if pages > math.ceil(len(wanted) / NAME_FILTER_VALUES):
                self._list_plan = "named"
                log.info("list_plan_named", listed=len(metas), cached=len(wanted))
        else:
            names = sorted({name for arn in arns if (name := self._cache.name_of(arn))})
            metas = []
            self._list_calls = max(1, math.ceil(len(names) / NAME_FILTER_VALUES))
            for start in range(0, len(names), NAME_FILTER_VALUES):
                metas.extend(await self._source.list_secrets(names[start : start + NAME_FILTER_VALUES]))
        return {meta.arn: meta for meta in metas if meta.arn in wanted}

    def _direct_checks(self, arns: Sequence[str], listed: dict[str, SecretMeta]) -> list[str]:
        """ARNs to confirm with DescribeSecret this cycle: near rotation, plus one round-robin."""
        now = self._wall()
        window_start = now - ROTATION_WINDOW_SECONDS
        window_end = now + self._refresh.interval_seconds
        chosen = [
            arn
            for arn, meta in listed.items()
            if meta.next_rotation is not None and window_start <= meta.next_rotation <= window_end
        ]
        self._passes += 1
        if self._passes % ROUND_ROBIN_EVERY == 0:
            ordered = sorted(arns)
            self._round_robin %= len(ordered)
            chosen.append(ordered[self._round_robin])
            self._round_robin += 1
        return chosen

    async def _describe(self, arn: str) -> SecretMeta | None:
        """DescribeSecret; records hard failures on the cache and returns None for them."""
        try:
            meta = await self._source.describe(arn)
        except UpstreamError as exc:
            if exc.transient:
                raise
            await self._cache.fail(arn, exc)
            log.warning("secret_unavailable", arn=arn, error=exc.code)
            return None
        if meta.deleted:
            error = UpstreamRejected(
                "You can't perform this operation on the secret because it was marked for deletion.",
                code="InvalidRequestException",
            )
            await self._cache.fail(arn, error)
            log.warning("secret_deleted", arn=arn)
            return None
        return meta

    async def _moved(self, meta: SecretMeta) -> bool:
        current = await self._cache.peek(meta.arn, STAGE_CURRENT)
        return current is not None and meta.current_version not in (None, current.value.version_id)

    async def _reread(self, moved: Sequence[SecretMeta], *, how: How) -> None:
        """Fetch the new AWSCURRENT of each moved secret and install it."""
        if not moved:
            return
        by_arn = {meta.arn: meta for meta in moved}
        values: list[SecretValue] = []
        errors: dict[str, UpstreamError] = {}
        if len(moved) == 1:
            try:
                values.append(await self._source.get_secret_value(moved[0].arn, STAGE_CURRENT))
            except UpstreamError as exc:
                errors[moved[0].arn] = exc
        else:
            result = await self._fetch_current(list(by_arn))
            values.extend(result.values)
            errors.update(result.errors)
        for value in values:
            meta = by_arn[value.arn]
            if meta.current_version != value.version_id:
                # It moved again between the list and the read: describe for stages that match.
                fresh = await self._describe(value.arn)
                if fresh is None:
                    continue
                meta = fresh
            old = await self._cache.rotate(meta, value)
            self._cache.rotations.publish(Rotation(value, old, how))
        # Values that did arrive are installed first; then hard failures are recorded
        # and a transient one fails the pass (to be retried) without undoing the rest.
        transient = [error for error in errors.values() if error.transient]
        for arn, error in errors.items():
            if not error.transient:
                await self._cache.fail(arn, error)
        if transient:
            raise transient[0]

    # ------------------------------------------------------------------ events

    async def _spread_event(self) -> None:
        """Wait the planner's event delay once per burst of events (they reach the whole fleet at once).

        Events are handled one after another; the later ones of a burst do not wait again,
        this agent being at its random place in the fleet's spread already.
        """
        now = self._clock()
        if now < self._event_spread_until:
            return
        delay = self._planner.event_delay()
        self._event_spread_until = now + delay + EVENT_BURST_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)

    def cached_arn(self, secret_ref: str) -> str | None:
        """The canonical ARN of a cached secret an event names (by name, ARN or partial ARN), else None."""
        # An event may carry the full ARN while the cache knows the name or partial ARN.
        arn = self._cache.resolve(secret_ref)
        if arn is None and looks_like_arn(secret_ref):
            arn = self._cache.resolve(partial_arn(secret_ref))
        return arn

    async def refresh_secret(self, secret_ref: str, *, how: How) -> bool:
        """Refresh one cached secret now (an event named it). False if it is not cached."""
        arn = self.cached_arn(secret_ref)
        if arn is None:
            return False
        await self._spread_event()
        meta = await self._describe(arn)
        if meta is None:
            return True
        if await self._moved(meta):
            await self._reread([meta], how=how)
        else:
            await self._cache.confirm(meta)
        return True
