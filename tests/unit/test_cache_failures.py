"""Failed reads cost bounded memory and few upstream calls: backoff records, negative cache, deadlines, stop."""

from __future__ import annotations

import asyncio

import pytest

from agent.cache.failures import FailureBook, detached
from agent.cache.store import SecretCache
from agent.core.errors import SecretNotFound, UpstreamClosed, UpstreamTimeout, UpstreamUnavailable
from agent.core.types import CURRENT, Selector
from tests.support.fakes import FakeSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_for(source: FakeSource, clock: Clock | None = None, **kwargs: float) -> SecretCache:
    options = {"ttl_seconds": 10.0, "max_entries": 10, "max_stale_seconds": 100.0, **kwargs}
    return SecretCache(source, clock=clock or Clock(), **options)  # type: ignore[arg-type]


async def test_missing_secret_is_asked_once_per_negative_ttl() -> None:
    """1000 reads of a missing id make one upstream call inside negative_ttl_seconds, each still a 404."""
    source = FakeSource()
    clock = Clock()
    cache = cache_for(source, clock, negative_ttl_seconds=5)
    for _ in range(1000):
        with pytest.raises(SecretNotFound):
            await cache.get("nope", CURRENT)
    assert source.calls["nope"] == 1
    source.add("nope", "created")
    with pytest.raises(SecretNotFound):
        await cache.get("nope", CURRENT)  # still inside the bound
    assert (await cache.get("nope", CURRENT, refresh=True)).value.secret_string == "created"  # refreshNow bypasses
    assert source.calls["nope"] == 2


async def test_created_secret_seen_after_the_negative_ttl() -> None:
    """A secret created after a 404 is read once negative_ttl_seconds have passed."""
    source = FakeSource()
    clock = Clock()
    cache = cache_for(source, clock, negative_ttl_seconds=5)
    with pytest.raises(SecretNotFound):
        await cache.get("later", CURRENT)
    source.add("later", "v")
    clock.now += 5.1
    assert (await cache.get("later", CURRENT)).value.secret_string == "v"


async def test_failure_records_are_bounded_and_hold_no_traceback() -> None:
    """10,000 distinct failing ids leave at most max(1000, max_entries) records, none with a traceback."""
    source = FakeSource()
    source.fail_with = UpstreamUnavailable("down")
    cache = cache_for(source)
    for index in range(10_000):
        with pytest.raises(UpstreamUnavailable):
            await cache.get(f"id-{index}", CURRENT)
    assert len(cache.failures) == 1000
    kept = cache.failures.blocked(("id-9999", CURRENT.cache_suffix))
    assert kept is not None and kept.__traceback__ is None and kept.__cause__ is None


def test_detached_error_keeps_class_code_and_message() -> None:
    """A detached copy answers like the original (class, code, message) without its exception chain."""
    try:
        try:
            raise ValueError("botocore internals")
        except ValueError as inner:
            raise UpstreamUnavailable("boom", code="InternalServiceError") from inner
    except UpstreamUnavailable as original:
        copy = detached(original)
    assert (type(copy), copy.code, copy.message) == (UpstreamUnavailable, "InternalServiceError", "boom")
    assert copy.__cause__ is None and copy.__traceback__ is None


def test_failure_book_evicts_least_recently_failed() -> None:
    """Past max_records the oldest failing key is forgotten first."""
    book = FailureBook(max_records=2, negative_ttl_seconds=5, clock=Clock())
    for name in ("a", "b", "c"):
        book.note((name, "x"), SecretNotFound("missing"))
    assert [book.missing((name, "x")) is not None for name in ("a", "b", "c")] == [False, True, True]


async def test_read_deadline_answers_504_or_the_stale_value() -> None:
    """A hung upstream costs a reader at most read_deadline_seconds: 504 for a miss, the cached value otherwise."""
    source = FakeSource()
    source.add("s", "cached")
    clock = Clock()
    cache = cache_for(source, clock, read_deadline_seconds=0.05, max_stale_seconds=100)
    await cache.get("s", CURRENT)
    source.gate = asyncio.Event()  # upstream stops answering
    with pytest.raises(UpstreamTimeout):
        await cache.get("other", CURRENT)
    clock.now += 20
    served = await cache.get("s", CURRENT, refresh=True)
    assert (served.outcome, served.value.secret_string) == ("stale", "cached")
    source.gate.set()
    await cache.stop()


async def test_stop_answers_waiting_readers_at_once() -> None:
    """At shutdown a reader waiting on a hung upstream gets UpstreamClosed (503) instead of hanging."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = cache_for(source, read_deadline_seconds=60)
    reader = asyncio.create_task(cache.get("s", CURRENT))
    await asyncio.sleep(0)  # the reader is now waiting on the upstream call
    await cache.stop()
    with pytest.raises(UpstreamClosed) as caught:
        await reader
    assert caught.value.status == 503


async def test_repeated_failures_do_not_collect_readers_frames() -> None:
    """Reading one missing (or backing-off) id many times raises fresh errors; the kept one gains no traceback."""
    source = FakeSource()
    cache = cache_for(source, negative_ttl_seconds=60)
    raised: list[BaseException] = []
    for _ in range(200):
        with pytest.raises(SecretNotFound) as caught:
            await cache.get("gone", CURRENT)
        raised.append(caught.value)
    assert len({id(error) for error in raised[1:]}) == 199  # a new object each time
    kept = cache.failures._records[("gone", CURRENT.cache_suffix)].error
    assert kept.__traceback__ is None


async def test_refresh_now_does_not_join_a_background_revalidation() -> None:
    """refreshNow asks upstream itself even while an expired value is being revalidated in the background."""
    source = FakeSource()
    source.add("s", "v1")
    clock = Clock()
    cache = cache_for(source, clock, stale_while_revalidate_seconds=60)
    await cache.get("s", CURRENT)
    clock.now += 11
    source.gate = asyncio.Event()  # the revalidation hangs
    assert (await cache.get("s", CURRENT)).outcome == "revalidating"
    source.add("s", "v2", version="v2")
    source.gate.set()
    refreshed = await cache.get("s", CURRENT, refresh=True)
    assert (refreshed.outcome, refreshed.value.secret_string) == ("refresh", "v2")
    await cache.stop()


async def test_rarely_read_value_is_revalidated_before_it_is_served() -> None:
    """Past ttl plus stale_while_revalidate_seconds a read waits for the revalidation: never a rotation late."""
    source = FakeSource()
    source.add("s", "v1")
    clock = Clock()
    cache = cache_for(source, clock, stale_while_revalidate_seconds=5, max_stale_seconds=3600)
    await cache.get("s", CURRENT)
    source.add("s", "v2", version="v2")
    clock.now += 10 + 6
    late = await cache.get("s", CURRENT)
    assert (late.outcome, late.value.secret_string) == ("miss", "v2")


async def test_no_upstream_call_starts_after_stop() -> None:
    """After stop() reads make no upstream call: a cached value is served, a miss gets 503."""
    source = FakeSource()
    source.add("s", "v")
    clock = Clock()
    cache = cache_for(source, clock)
    await cache.get("s", CURRENT)
    await cache.stop()
    calls = sum(source.calls.values())
    clock.now += 20
    assert (await cache.get("s", CURRENT)).value.secret_string == "v"
    with pytest.raises(UpstreamClosed):
        await cache.get("never-read", CURRENT)
    with pytest.raises(UpstreamClosed):
        await cache.describe("never-read")
    assert sum(source.calls.values()) == calls


async def test_no_negative_cache_when_caching_is_off() -> None:
    """With ttl_seconds = 0 every read asks upstream, a missing secret included."""
    source = FakeSource()
    cache = cache_for(source, ttl_seconds=0, negative_ttl_seconds=60)
    for _ in range(3):
        with pytest.raises(SecretNotFound):
            await cache.get("gone", CURRENT)
    assert source.calls["gone"] == 3


async def test_describe_has_the_read_deadline() -> None:
    """DescribeSecret for an uncached secret waits at most the read deadline when upstream hangs."""
    source = FakeSource()
    source.add("s", "v")
    source.gate = asyncio.Event()
    cache = cache_for(source, read_deadline_seconds=0.05)
    with pytest.raises(UpstreamTimeout):
        await cache.describe("s")
    source.gate.set()
    await cache.stop()


async def test_version_id_copy_is_no_fresher_than_its_source() -> None:
    """A read by VersionId served from the stage entry keeps its confirmation time; past max_stale it asks upstream."""
    source = FakeSource()
    secret = source.add("s", "v1")
    clock = Clock()
    cache = cache_for(source, clock, max_stale_seconds=100)
    await cache.get("s", CURRENT)
    clock.now += 50
    copy = await cache.get("s", Selector(version_id=secret.version_id))
    assert (copy.outcome, copy.age) == ("hit", 50)
    assert source.calls["s"] == 1
    later = cache_for(source, clock, max_stale_seconds=100)
    await later.get("s", CURRENT)
    clock.now += 101  # the stage entry is past max_stale: it no longer vouches for the version
    assert (await later.get("s", Selector(version_id=secret.version_id))).outcome == "miss"
    assert source.calls["s"] == 3
