"""SecretCache logic against a fake source: aliases, LRU, TTL, single flight."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agent.cache.store import SecretCache
from agent.core.errors import SecretNotFound, UpstreamDenied, UpstreamUnavailable
from agent.core.types import CURRENT, Selector
from agent.upstream.source import SecretMeta
from tests.support.fakes import FakeSource
from tests.support.waiting import eventually


def await_idle(cache: SecretCache) -> bool:
    """True once no upstream call of the cache is in flight (background revalidations included)."""
    return not cache._inflight


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(source: FakeSource, *, ttl: float = 300, max_entries: int = 100, clock: Clock | None = None) -> SecretCache:
    return SecretCache(
        source, ttl_seconds=ttl, max_entries=max_entries, max_stale_seconds=86_400, clock=clock or Clock()
    )


async def test_name_arn_and_partial_arn_share_one_entry() -> None:
    """A name, its full ARN and its partial ARN resolve to one cache entry."""
    source = FakeSource()
    secret = source.add("app/db", "pw")
    cache = make(source)
    first = await cache.get("app/db", CURRENT)
    assert first.outcome == "miss" and first.value.secret_string == "pw"
    for alias in (secret.arn, secret.arn[:-7], "app/db"):
        again = await cache.get(alias, CURRENT)
        assert again.outcome == "hit" and again.value is first.value
    assert len(cache) == 1
    assert sum(source.calls.values()) == 1


async def test_lru_evicts_least_recently_used() -> None:
    """Past max_entries the least recently *used* entry goes, not the oldest inserted."""
    source = FakeSource()
    for name in ("a", "b", "c"):
        source.add(name, name)
    cache = make(source, max_entries=2)
    await cache.get("a", CURRENT)
    await cache.get("b", CURRENT)
    await cache.get("a", CURRENT)  # a is now more recent than b
    await cache.get("c", CURRENT)  # evicts b
    assert len(cache) == 2
    assert (await cache.get("a", CURRENT)).outcome == "hit"
    assert (await cache.get("c", CURRENT)).outcome == "hit"
    assert (await cache.get("b", CURRENT)).outcome == "miss"
    assert cache.resolve("b") is not None  # re-added on the miss


async def test_eviction_drops_aliases() -> None:
    """Evicting a secret's last version forgets its aliases, keeping the alias table bounded."""
    source = FakeSource()
    a = source.add("a", "1")
    source.add("b", "2")
    cache = make(source, max_entries=1)
    await cache.get("a", CURRENT)
    await cache.get("b", CURRENT)
    assert cache.resolve("a") is None and cache.resolve(a.arn) is None


async def test_ttl_expiry_revalidates_without_rereading() -> None:
    """Past ttl_seconds a read is answered at once while DescribeSecret revalidates; re-read only if it moved."""
    source = FakeSource()
    secret = source.add("s", "v")
    clock = Clock()
    cache = make(source, ttl=10, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 9.9
    assert (await cache.get("s", CURRENT)).outcome == "hit"
    clock.now += 0.2
    expired = await cache.get("s", CURRENT)
    assert expired.outcome == "revalidating" and expired.value.secret_string == "v"
    await eventually(lambda: await_idle(cache))
    assert source.calls["s"] == 1 and source.calls[f"describe:{secret.arn}"] == 1
    assert (await cache.get("s", CURRENT)).outcome == "hit"  # confirmation restarted the TTL
    source.add("s", "v2", version="v2")
    clock.now += 11
    assert (await cache.get("s", CURRENT)).value.secret_string == "v"  # answered at once, old value
    await eventually(lambda: await_idle(cache))
    moved = await cache.get("s", CURRENT)
    assert moved.outcome == "hit" and moved.value.secret_string == "v2"


async def test_version_id_entries_never_expire() -> None:
    """A version id names an immutable value, so its entry is served past the TTL."""
    source = FakeSource()
    source.add("s", "v")
    clock = Clock()
    cache = make(source, ttl=10, clock=clock)
    await cache.get("s", Selector(version_id="v1"))
    clock.now += 1000
    assert (await cache.get("s", Selector(version_id="v1"))).outcome == "hit"
    assert source.calls["s"] == 1


async def test_stale_if_error_serves_last_good_value() -> None:
    """A transient upstream failure after the TTL serves the cached value, marked stale with its age."""
    source = FakeSource()
    source.add("s", "good")
    clock = Clock()
    cache = SecretCache(source, ttl_seconds=10, max_entries=10, max_stale_seconds=100, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 50
    source.fail_with = UpstreamUnavailable("down")
    assert (await cache.get("s", CURRENT)).outcome == "revalidating"  # the revalidation fails behind it
    await eventually(lambda: await_idle(cache))
    stale = await cache.get("s", CURRENT)
    assert (stale.outcome, stale.value.secret_string, stale.age) == ("stale", "good", 50)


async def test_stale_reads_back_off_from_upstream() -> None:
    """After a transient failure, reads inside the backoff window make no upstream call."""
    source = FakeSource()
    secret = source.add("s", "good")
    clock = Clock()
    cache = SecretCache(source, ttl_seconds=10, max_entries=10, max_stale_seconds=100, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 20
    source.fail_with = UpstreamUnavailable("down")
    await cache.get("s", CURRENT)
    await eventually(lambda: await_idle(cache))
    tries = source.calls[f"describe:{secret.arn}"]
    assert tries == 1
    for _ in range(20):
        assert (await cache.get("s", CURRENT)).outcome == "stale"
    assert source.calls[f"describe:{secret.arn}"] == tries


async def test_past_max_stale_the_error_surfaces() -> None:
    """Beyond max_stale_seconds the upstream error reaches the reader."""
    source = FakeSource()
    source.add("s", "good")
    clock = Clock()
    cache = SecretCache(source, ttl_seconds=10, max_entries=10, max_stale_seconds=100, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 101
    source.fail_with = UpstreamUnavailable("down")
    with pytest.raises(UpstreamUnavailable):
        await cache.get("s", CURRENT)


async def test_non_transient_error_is_not_hidden() -> None:
    """AccessDenied/ResourceNotFound found by a revalidation reach the next reader although a value is cached."""
    source = FakeSource()
    source.add("s", "good")
    clock = Clock()
    cache = SecretCache(source, ttl_seconds=10, max_entries=10, max_stale_seconds=100, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 20
    source.fail_with = UpstreamDenied("no")
    assert (await cache.get("s", CURRENT)).outcome == "revalidating"
    await eventually(lambda: await_idle(cache))
    with pytest.raises(UpstreamDenied):
        await cache.get("s", CURRENT)


async def test_recorded_failure_surfaces_on_next_read() -> None:
    """fail() (the refresher saw the secret deleted) makes the next read raise and forgets the secret."""
    source = FakeSource()
    secret = source.add("s", "good")
    cache = make(source)
    await cache.get("s", CURRENT)
    await cache.fail(secret.arn, SecretNotFound("gone"))
    with pytest.raises(SecretNotFound):
        await cache.get("s", CURRENT)
    assert len(cache) == 0


async def test_rotate_keeps_previous_readable() -> None:
    """rotate() installs the new AWSCURRENT and keeps the old value as AWSPREVIOUS with updated stages."""
    source = FakeSource()
    old = source.add("s", "one", version="v1")
    cache = make(source)
    await cache.get("s", CURRENT)
    new = dataclasses.replace(old, version_id="v2", secret_string="two")
    meta = SecretMeta(arn=old.arn, name="s", versions_to_stages={"v1": ("AWSPREVIOUS",), "v2": ("AWSCURRENT",)})
    assert await cache.rotate(meta, new) == "v1"
    current = await cache.get("s", CURRENT)
    previous = await cache.get("s", Selector(version_stage="AWSPREVIOUS"))
    assert (current.outcome, current.value.secret_string) == ("hit", "two")
    assert (previous.outcome, previous.value.secret_string) == ("hit", "one")
    assert previous.value.version_stages == ("AWSPREVIOUS",)


async def test_ttl_zero_disables_caching() -> None:
    """ttl_seconds = 0 means every read goes upstream and nothing is stored."""
    source = FakeSource()
    source.add("s", "v")
    cache = make(source, ttl=0)
    await cache.get("s", CURRENT)
    await cache.get("s", CURRENT)
    assert source.calls["s"] == 2 and len(cache) == 0


async def test_versions_by_id_and_stage_are_separate() -> None:
    """Different selectors of one secret are different entries under one ARN."""
    source = FakeSource()
    source.add("s", "v")
    cache = make(source)
    await cache.get("s", CURRENT)
    await cache.get("s", Selector(version_id="v1"))
    await cache.get("s", Selector(version_stage="AWSPREVIOUS"))
    assert len(cache) == 3
    assert (await cache.get("s", Selector(version_id="v1"))).outcome == "hit"


async def test_refresh_bypasses_and_updates() -> None:
    """refresh=True always goes upstream and stores what it got."""
    source = FakeSource()
    source.add("s", "old")
    cache = make(source)
    await cache.get("s", CURRENT)
    source.add("s", "new", version="v2")
    assert (await cache.get("s", CURRENT)).value.secret_string == "old"
    refreshed = await cache.get("s", CURRENT, refresh=True)
    assert refreshed.outcome == "refresh" and refreshed.value.secret_string == "new"
    assert (await cache.get("s", CURRENT)).value.secret_string == "new"


async def test_single_flight_one_upstream_call() -> None:
    """Fifty concurrent misses for one secret make exactly one upstream call."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = make(source)
    readers = [asyncio.create_task(cache.get("s", CURRENT)) for _ in range(50)]
    await eventually(lambda: source.calls["s"] >= 1, interval=0.01, message="the shared fetch to reach the source")
    source.gate.set()
    results = await asyncio.gather(*readers)
    assert source.calls["s"] == 1
    assert {lookup.value.secret_string for lookup in results} == {"v"}


async def test_single_flight_shares_failure_and_backs_off() -> None:
    """Concurrent misses share one failure; reads inside the backoff fail fast; after it, one retry."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    source.fail_with = UpstreamUnavailable("down")
    clock = Clock()
    cache = make(source, clock=clock)
    readers = [asyncio.create_task(cache.get("s", CURRENT)) for _ in range(10)]
    await eventually(lambda: source.calls["s"] >= 1, interval=0.01, message="the shared fetch to reach the source")
    source.gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert source.calls["s"] == 1
    source.fail_with = None
    with pytest.raises(UpstreamUnavailable):
        await cache.get("s", CURRENT)  # still inside the backoff window: no call
    assert source.calls["s"] == 1
    clock.now += 61  # past the capped backoff
    assert (await cache.get("s", CURRENT)).value.secret_string == "v"
    assert source.calls["s"] == 2


async def test_cancelled_reader_does_not_cancel_shared_fetch() -> None:
    """One reader going away does not abort the fetch the others wait on."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = make(source)
    first = asyncio.create_task(cache.get("s", CURRENT))
    second = asyncio.create_task(cache.get("s", CURRENT))
    await eventually(lambda: source.calls["s"] >= 1, interval=0.01, message="the shared fetch to reach the source")
    first.cancel()
    source.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second).value.secret_string == "v"
    assert source.calls["s"] == 1


async def test_previous_version_never_evicts_a_current_one() -> None:
    """With the cache full, a rotation's AWSPREVIOUS entry is dropped rather than evicting another secret."""
    source = FakeSource()
    a = source.add("a", "one", version="v1")
    source.add("b", "b")
    cache = make(source, max_entries=2)
    await cache.get("a", CURRENT)
    await cache.get("b", CURRENT)
    meta = SecretMeta(arn=a.arn, name="a", versions_to_stages={"v1": ("AWSPREVIOUS",), "v2": ("AWSCURRENT",)})
    await cache.rotate(meta, dataclasses.replace(a, version_id="v2", secret_string="two"))
    assert (await cache.get("b", CURRENT)).outcome == "hit"
    assert (await cache.get("a", CURRENT)).value.secret_string == "two"
    assert len(cache) == 2


async def test_rotation_reported_once_for_concurrent_readers() -> None:
    """Readers sharing one refresh that finds a new version report the rotation once, not once each."""
    source = FakeSource()
    source.add("s", "old", version="v1")
    seen: list[tuple[str, str | None, str]] = []
    cache = SecretCache(source, ttl_seconds=300, max_entries=10, max_stale_seconds=86_400)
    cache.rotations.subscribe(lambda r: seen.append((r.value.version_id, r.old_version, r.how)))
    await cache.get("s", CURRENT)
    source.add("s", "new", version="v2")
    source.gate = asyncio.Event()
    readers = [asyncio.create_task(cache.get("s", CURRENT, refresh=True)) for _ in range(5)]
    await eventually(lambda: source.calls["s"] >= 2, interval=0.01, message="the refresh to reach the source")
    source.gate.set()
    await asyncio.gather(*readers)
    assert seen == [("v2", "v1", "refreshNow")]


async def test_fresh_answers_exactly_the_plain_hits_get_would() -> None:
    """fresh() returns a value only where get() would answer a plain hit, and changes nothing itself."""
    source = FakeSource()
    source.add("app/db", "pw")
    clock = Clock()
    seen: list[str] = []
    cache = SecretCache(
        source, ttl_seconds=300, max_entries=10, max_stale_seconds=86_400, clock=clock, observe=seen.append
    )
    assert cache.fresh("app/db", CURRENT) is None  # never read: a miss is get()'s
    first = await cache.get("app/db", CURRENT)
    clock.now += 10
    hit = cache.fresh("app/db", CURRENT)
    assert hit is not None and hit.value is first.value and cache.age_of(hit) == 10
    assert seen == ["miss"]  # nothing counted until the caller serves it
    cache.count_hit(hit)
    assert seen == ["miss", "hit"]
    clock.now += 300
    assert cache.fresh("app/db", CURRENT) is None  # past the TTL: a revalidation is get()'s
    assert cache.age_of(hit) is None  # and a kept hit ends with it
    assert sum(source.calls.values()) == 1


async def test_a_kept_hit_ends_when_anything_it_rests_on_changes() -> None:
    """age_of() ends a kept hit on a confirmation, a recorded failure, an eviction; a version id never expires."""
    source = FakeSource()
    source.add("app/db", "pw")
    clock = Clock()
    cache = SecretCache(source, ttl_seconds=300, max_entries=10, max_stale_seconds=86_400, clock=clock)
    first = await cache.get("app/db", CURRENT)
    hit = cache.fresh("app/db", CURRENT)
    assert hit is not None and cache.age_of(hit) == 0
    clock.now += 5
    await cache.confirm(await source.describe("app/db"))  # vouched for as it is: the same entry, younger
    assert cache.age_of(hit) == 0
    source.add("app/db", "pw2", version="v2")  # a rotation moves the stages: a new entry
    await cache.rotate(await source.describe("app/db"), await source.get_secret_value("app/db", CURRENT))
    assert cache.age_of(hit) is None
    hit = cache.fresh("app/db", CURRENT)
    assert hit is not None and cache.age_of(hit) == 0 and hit.value.version_id == "v2"
    await cache.fail(first.value.arn, SecretNotFound("gone"))
    assert cache.age_of(hit) is None and cache.fresh("app/db", CURRENT) is None
    await cache.forget(first.value.arn)
    await cache.get("app/db", CURRENT)
    version = Selector(version_id=first.value.version_id)
    await cache.get("app/db", version)
    pinned = cache.fresh("app/db", version)
    assert pinned is not None
    clock.now += 10_000  # a version id ages without expiring
    assert cache.age_of(pinned) == 10_000
    await cache.forget(first.value.arn)
    assert cache.age_of(pinned) is None
