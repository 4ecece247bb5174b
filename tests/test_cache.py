"""SecretCache logic against a fake source: aliases, LRU, TTL, single flight."""

from __future__ import annotations

import asyncio

import pytest

from agent.cache import SecretCache
from agent.errors import UpstreamUnavailable
from agent.types import CURRENT, Selector
from tests.fakes import FakeSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(source: FakeSource, *, ttl: float = 300, max_entries: int = 100, clock: Clock | None = None) -> SecretCache:
    return SecretCache(source, ttl_seconds=ttl, max_entries=max_entries, clock=clock or Clock())


async def test_name_arn_and_partial_arn_share_one_entry() -> None:
    """A name, its full ARN and its partial ARN resolve to one cache entry."""
    source = FakeSource()
    secret = source.add("app/db", "pw")
    cache = make(source)
    value, outcome = await cache.get("app/db", CURRENT)
    assert outcome == "miss" and value.secret_string == "pw"
    for alias in (secret.arn, secret.arn[:-7], "app/db"):
        again, outcome = await cache.get(alias, CURRENT)
        assert outcome == "hit" and again is value
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
    assert (await cache.get("a", CURRENT))[1] == "hit"
    assert (await cache.get("c", CURRENT))[1] == "hit"
    assert (await cache.get("b", CURRENT))[1] == "miss"
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


async def test_ttl_expiry_goes_upstream() -> None:
    """An entry older than ttl_seconds is not served as a hit; the next read refetches."""
    source = FakeSource()
    source.add("s", "v")
    clock = Clock()
    cache = make(source, ttl=10, clock=clock)
    await cache.get("s", CURRENT)
    clock.now += 9.9
    assert (await cache.get("s", CURRENT))[1] == "hit"
    clock.now += 0.2
    assert (await cache.get("s", CURRENT))[1] == "miss"
    assert source.calls["s"] == 2


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
    assert (await cache.get("s", Selector(version_id="v1")))[1] == "hit"


async def test_refresh_bypasses_and_updates() -> None:
    """refresh=True always goes upstream and stores what it got."""
    source = FakeSource()
    source.add("s", "old")
    cache = make(source)
    await cache.get("s", CURRENT)
    source.add("s", "new", version="v2")
    assert (await cache.get("s", CURRENT))[0].secret_string == "old"
    value, outcome = await cache.get("s", CURRENT, refresh=True)
    assert outcome == "refresh" and value.secret_string == "new"
    assert (await cache.get("s", CURRENT))[0].secret_string == "new"


async def test_single_flight_one_upstream_call() -> None:
    """Fifty concurrent misses for one secret make exactly one upstream call."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = make(source)
    readers = [asyncio.create_task(cache.get("s", CURRENT)) for _ in range(50)]
    await asyncio.sleep(0.01)
    source.gate.set()
    results = await asyncio.gather(*readers)
    assert source.calls["s"] == 1
    assert {value.secret_string for value, _ in results} == {"v"}


async def test_single_flight_shares_failure_and_recovers() -> None:
    """Concurrent misses share one failure; the next read tries again."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    source.fail_with = UpstreamUnavailable("down")
    cache = make(source)
    readers = [asyncio.create_task(cache.get("s", CURRENT)) for _ in range(10)]
    await asyncio.sleep(0.01)
    source.gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert source.calls["s"] == 1
    source.fail_with = None
    assert (await cache.get("s", CURRENT))[0].secret_string == "v"


async def test_cancelled_reader_does_not_cancel_shared_fetch() -> None:
    """One reader going away does not abort the fetch the others wait on."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = make(source)
    first = asyncio.create_task(cache.get("s", CURRENT))
    second = asyncio.create_task(cache.get("s", CURRENT))
    await asyncio.sleep(0.01)
    first.cancel()
    source.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second)[0].secret_string == "v"
    assert source.calls["s"] == 1
