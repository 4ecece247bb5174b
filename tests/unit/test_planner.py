"""The refresh planner's choices under each quota regime, on a simulated clock, and the refresher following them."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from agent.cache.planner import (
    ACCOUNT_QUOTAS,
    BATCH_GET_SECRET_VALUE,
    DESCRIBE_SECRET,
    HOLD_SECONDS,
    LIST_SECRET_VERSION_IDS,
    LIST_SECRETS,
    Planner,
)
from agent.cache.refresher import Refresher
from agent.cache.store import SecretCache
from agent.config import PrefetchSettings, RefreshSettings
from agent.core.errors import UpstreamThrottled
from agent.core.metrics import Metrics
from agent.core.types import CURRENT
from agent.upstream.source import BatchResult, SecretMeta
from tests.support.fakes import FakeSource


class Clock:
    """A simulated monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def planner(fleet: int, *, clock: Clock | None = None, events: bool = False, share: float = 0.5) -> Planner:
    return Planner(
        interval=30,
        fleet_size=fleet,
        quota_share=share,
        events=events,
        max_interval=300,
        clock=clock or Clock(),
        rng=random.Random(7),
    )


def test_alone_lists_at_the_configured_interval() -> None:
    """One agent with 20 secrets lists them in one ListSecrets call per configured interval."""
    plan = planner(1).plan(20)
    assert (plan.how, plan.interval, plan.calls, plan.stretched) == ("list", 30.0, 1, False)


def test_history_seeding_budget_is_the_fleets_share_of_50_per_second() -> None:
    """ListSecretVersionIds (history seeding's spacing) is budgeted at the share of 50/s: 100 agents, 0.25/s each."""
    assert planner(100).budget(LIST_SECRET_VERSION_IDS) == pytest.approx(0.25)
    assert planner(1, share=0.2).budget(LIST_SECRET_VERSION_IDS) == pytest.approx(10.0)


def test_list_kept_while_the_fleet_fits_the_list_budget() -> None:
    """A hundred agents fit the ListSecrets share (1 call / 30 s each against 0.5/s), so they keep listing."""
    assert planner(100).plan(20).how == "list"


def test_listing_scarce_for_a_large_fleet_describes_each_secret() -> None:
    """10,000 agents cannot each list every 30 s within half of 100/s: they describe (40,000/s) at 30 s instead."""
    plan = planner(10_000).plan(20)
    assert (plan.how, plan.interval, plan.calls, plan.stretched) == ("describe", 30.0, 20, False)


def test_large_cache_lists_when_describing_would_not_fit() -> None:
    """10,000 secrets fit no plan at 30 s for 100 agents (the least stretched wins); 10 agents list them."""
    plan = planner(100).plan(10_000, list_calls=100)
    # list: 100 calls / 0.5 per s = 200 s; describe: 10,000 calls / 200 per s = 50 s: describing stretches less.
    assert (plan.how, plan.interval) == ("describe", 50.0)
    plan = planner(10).plan(10_000, list_calls=100)
    assert (plan.how, plan.interval, plan.stretched) == ("list", 30.0, False)


def test_stretching_is_the_last_resort_and_states_its_staleness() -> None:
    """100,000 agents fit no plan at 30 s: the pass is stretched to what DescribeSecret's share allows."""
    plan = planner(100_000).plan(20)
    assert (plan.how, plan.interval, plan.stretched) == ("describe", pytest.approx(100.0), True)
    assert plan.staleness_bound == pytest.approx(110.0)


def test_events_make_polling_a_cheap_backstop() -> None:
    """With events on, 10,000 agents list every 200 s (within the TTL) rather than describe 20 secrets every 30 s."""
    plan = planner(10_000, events=True).plan(20)
    assert (plan.how, plan.interval) == ("list", pytest.approx(200.0))
    assert planner(1, events=True).plan(20).interval == 30.0  # alone, nothing to save by stretching
    # 100,000 agents: listing would take 2,000 s, past the TTL; describing fits in 100 s.
    plan = planner(100_000, events=True).plan(20)
    assert (plan.how, plan.interval, plan.stretched) == ("describe", pytest.approx(100.0), True)
    # 1,000,000 agents: nothing fits in the TTL; the fewest calls per second is listing every 20,000 s.
    plan = planner(1_000_000, events=True).plan(20)
    assert (plan.how, plan.interval) == ("list", pytest.approx(20_000.0))


def test_event_handling_spread_over_the_fleets_burst() -> None:
    """Events are acted on at once while the fleet's re-reads fit its share of a second; 100,000 agents spread 19 s."""
    assert planner(1).event_delay() == 0.0
    assert planner(5_000).event_delay() == 0.0  # 5,000 re-reads: half of GetSecretValue's one-second burst
    fleet = planner(100_000)
    delays = [fleet.event_delay() for _ in range(50)]
    assert all(0 <= delay < 19.0 for delay in delays) and max(delays) > 10.0


def test_event_spreading_follows_a_fleet_size_taught_by_throttling() -> None:
    """An agent told it is alone but throttled learns the fleet is larger, and spreads its event re-reads too."""
    chooser = planner(1, share=0.01)  # alone, its re-reads fit: no spread
    assert chooser.event_delay() == 0.0
    chooser.plan(20)  # one ListSecrets per 30 s
    chooser.note_throttled(LIST_SECRETS)  # ...overran 100/s: at least 3,000 agents, whose re-reads need 29 s
    delays = [chooser.event_delay() for _ in range(50)]
    assert all(0 <= delay < 29.0 for delay in delays) and max(delays) > 15.0


def test_throttled_list_is_held_then_tried_again() -> None:
    """A throttled ListSecrets is planned around for a hold that doubles while it keeps throttling."""
    clock = Clock()
    chooser = planner(1, clock=clock)
    chooser.note_throttled(LIST_SECRETS)
    assert chooser.plan(20).how == "describe"
    clock.now += HOLD_SECONDS + 1
    assert not chooser.held(LIST_SECRETS)
    chooser.note_throttled(LIST_SECRETS)  # throttled again soon after the hold: twice as long
    clock.now += HOLD_SECONDS + 1
    assert chooser.held(LIST_SECRETS)
    clock.now += HOLD_SECONDS
    assert not chooser.held(LIST_SECRETS)
    clock.now += 5 * HOLD_SECONDS  # a quiet spell longer than twice the last hold
    chooser.note_throttled(LIST_SECRETS)
    clock.now += HOLD_SECONDS + 1
    assert not chooser.held(LIST_SECRETS)  # back to the first hold length


def test_throttling_teaches_a_fleet_size_that_fades() -> None:
    """Hint 1, but listing every 30 s throttles: the fleet is >= 3,000 agents, so it describes until that fades."""
    clock = Clock()
    chooser = planner(1, clock=clock)
    assert chooser.plan(20).how == "list"
    chooser.note_throttled(LIST_SECRETS)
    assert chooser.effective_size() == pytest.approx(3000.0)  # 100/s over 1 call per 30 s
    clock.now += HOLD_SECONDS + 1  # the hold is over, the lesson is not
    assert chooser.plan(20).how == "describe"
    clock.now += 2 * 3600  # two half-lives: 750 agents, whose listing fits 50/s
    assert chooser.plan(20).how == "list"


def test_start_up_spread_over_the_fleets_prefetch_window() -> None:
    """Alone: no delay and one batch; 1,000 agents: GetSecretValue, delays spread below the 4 s the fleet needs."""
    assert planner(1).startup_delay(20) == 0.0
    assert planner(1).prefetch_via(20) == "batch"
    assert planner(100).prefetch_via(20) == "batch"  # 100 batches at 50/s: 2 s
    fleet = planner(1000)
    assert fleet.startup_windows(20) == {"batch": pytest.approx(20.0), "get": pytest.approx(4.0)}
    assert fleet.prefetch_via(20) == "get"
    delays = [fleet.startup_delay(20) for _ in range(200)]
    assert max(delays) < 4.0 and min(delays) < 0.5 and max(delays) > 3.5


def test_throttled_batch_is_held_for_prefetch() -> None:
    """After BatchGetSecretValue throttles, prefetches go one GetSecretValue per secret."""
    chooser = planner(1)
    chooser.note_throttled(BATCH_GET_SECRET_VALUE)
    assert chooser.prefetch_via(20) == "get"


# ---------------------------------------------------------------- the refresher follows the plan


class ThrottlingSource(FakeSource):
    """A fake whose ListSecrets and BatchGetSecretValue can answer ThrottlingException."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle_list = False
        self.throttle_batch = False

    async def list_secrets(self, *args: object, **kwargs: object) -> list[SecretMeta]:
        self.calls["ListSecrets"] += 1
        if self.throttle_list:
            raise UpstreamThrottled("Rate exceeded", code="ThrottlingException")
        return [self.meta(s) for s in self.secrets.values()]

    async def batch_get(self, secret_ids: Sequence[str]) -> BatchResult:
        self.calls["BatchGetSecretValue"] += 1
        if self.throttle_batch:
            error = UpstreamThrottled("Rate exceeded", code="ThrottlingException")
            return BatchResult(errors=dict.fromkeys(secret_ids, error))
        return await super().batch_get(secret_ids)


def build(source: FakeSource, names: list[str], chooser: Planner) -> tuple[SecretCache, Refresher, Metrics]:
    cache = SecretCache(source, ttl_seconds=300, max_entries=1000, max_stale_seconds=86_400)
    metrics = Metrics()
    refresher = Refresher(
        source,
        cache,
        PrefetchSettings(secrets=tuple(names), name_prefixes=(), tags=()),
        RefreshSettings(mode="poll", interval_seconds=30),
        max_stale_seconds=86_400,
        metrics=metrics,
        planner=chooser,
    )
    return cache, refresher, metrics


def names_in(source: FakeSource, count: int) -> list[str]:
    names = [f"s{i}" for i in range(count)]
    for name in names:
        source.add(name, "v")
    return names


async def test_large_fleet_pass_describes_instead_of_listing() -> None:
    """An agent of a 10,000-agent fleet confirms its secrets with DescribeSecret and makes no ListSecrets call."""
    source = ThrottlingSource()
    names = names_in(source, 5)
    _cache, refresher, metrics = build(source, names, planner(10_000))
    await refresher.prefetch()
    await refresher.poll_once()
    assert source.calls["ListSecrets"] == 0
    assert sum(n for key, n in source.calls.items() if key.startswith("describe:")) == 5
    assert metrics.refresh_plan.labels("describe")._value.get() == 1
    assert metrics.refresh_interval._value.get() == 30.0


async def test_list_throttled_pass_describes_and_installs_rotation() -> None:
    """A pass whose ListSecrets throttles describes every secret instead, installs a rotation, and does not fail."""
    source = ThrottlingSource()
    names = names_in(source, 3)
    cache, refresher, _metrics = build(source, names, planner(1))
    await refresher.prefetch()
    source.throttle_list = True
    source.add("s1", "rotated", version="v2")
    await refresher.poll_once()
    assert (await cache.get("s1", CURRENT)).value.secret_string == "rotated"
    source.calls.clear()
    await refresher.poll_once()  # ListSecrets is held now: not even tried
    assert source.calls["ListSecrets"] == 0


async def test_prefetch_falls_back_to_get_when_batch_throttles() -> None:
    """Prefetch reads each secret with GetSecretValue when BatchGetSecretValue throttles, and counts the fallbacks."""
    source = ThrottlingSource()
    names = names_in(source, 4)
    source.throttle_batch = True
    cache, refresher, metrics = build(source, names, planner(1))
    await refresher.prefetch()
    assert not refresher.failed
    assert all(source.calls[name] == 1 for name in names)
    assert (await cache.get("s2", CURRENT)).outcome == "hit"
    assert metrics.batch_fallbacks._value.get() == 4


async def test_list_throttled_pass_waits_when_describing_all_would_overrun_the_budget() -> None:
    """When describing every secret does not fit this interval either, a throttled list pass describes none."""
    source = ThrottlingSource()
    names = names_in(source, 20)
    tight = Planner(
        interval=30,
        fleet_size=1,
        max_interval=300,
        # The throttle teaches a fleet of 3,000 (100/s over one list per 30 s): its describe budget is then
        # 3,000 x 0.5 / 3,000 = 0.5/s, so 20 describes need 40 s, over the 30 s interval.
        quotas={**ACCOUNT_QUOTAS, DESCRIBE_SECRET: 3000.0},
        clock=Clock(),
        rng=random.Random(7),
    )
    _cache, refresher, metrics = build(source, names, tight)
    await refresher.prefetch()
    source.throttle_list = True
    await refresher.poll_once()
    assert not [key for key in source.calls if key.startswith("describe:")]
    assert metrics.refresh_interval._value.get() == 40.0  # the next pass waits for the stretched interval
    source.calls.clear()
    await refresher.poll_once()  # listing held: the stretched describe plan runs
    assert sum(n for key, n in source.calls.items() if key.startswith("describe:")) == 20


async def test_list_throttled_waits_never_starve_the_describe_pass() -> None:
    """A pass that waited after a throttled list describes next, even when its stretched wait outlasts the hold."""
    source = ThrottlingSource()
    names = names_in(source, 20)
    clock = Clock()
    # Events on, 1,000,000 agents: listing every 20,000 s; after a throttle, describing needs ~2,000 s per pass,
    # longer than the 300 s ListSecrets hold, so a later pass would plan listing again (and throttle again).
    _cache, refresher, metrics = build(source, names, planner(1_000_000, clock=clock, events=True))
    await refresher.prefetch()
    source.throttle_list = True
    for _ in range(3):
        await refresher.poll_once()
        clock.now += metrics.refresh_interval._value.get() * 1.1  # the longest jittered wait
    assert sum(n for key, n in source.calls.items() if key.startswith("describe:")) >= 20
