"""Parameter Store logic against a fake source: selectors, the parameter cache, change detection, policy ids."""

from __future__ import annotations

import asyncio

import pytest

from agent.cache.parameters import ParameterCache, ParameterRefresher, param_key
from agent.core.errors import BadRequest, SecretNotFound, UpstreamDenied, UpstreamTimeout, UpstreamUnavailable
from agent.server.parameters import asked_name, parameter_ids
from agent.upstream.ssm import split_selector
from tests.support.fakes import FakeParameters

ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/app/db"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(source: FakeParameters, clock: Clock, *, ttl: float = 300, deadline: float | None = None) -> ParameterCache:
    return ParameterCache(
        source,
        ttl_seconds=ttl,
        max_entries=100,
        max_stale_seconds=3600,
        read_deadline_seconds=deadline,
        negative_ttl_seconds=5,
        clock=clock,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/app/db", ("/app/db", None)),
        ("/app/db:3", ("/app/db", "3")),
        ("/app/db:blue", ("/app/db", "blue")),
        (ARN, (ARN, None)),
        (ARN + ":2", (ARN, "2")),
        ("plain", ("plain", None)),
    ],
)
def test_split_selector(name: str, expected: tuple[str, str | None]) -> None:
    """A selector is the part after the last colon of the name, never an ARN's own colons."""
    assert split_selector(name) == expected


def test_asked_name_combines_query_selectors() -> None:
    """version= and label= become name:selector; both, a doubled selector or a non-numeric version are refused."""
    assert asked_name({"name": "/a"}) == "/a"
    assert asked_name({"name": "/a", "version": "2"}) == "/a:2"
    assert asked_name({"name": "/a", "label": "blue"}) == "/a:blue"
    for bad in (
        {},
        {"name": ""},
        {"name": "/a", "version": "1", "label": "x"},
        {"name": "/a:1", "label": "x"},
        {"name": "/a", "version": "one"},
        {"name": "/a", "label": ""},
    ):
        with pytest.raises(BadRequest):
            asked_name(bad)


def test_parameter_ids_include_name_inside_an_arn() -> None:
    """A read by ARN is matched by patterns on the ARN and on the parameter's name."""
    assert parameter_ids(ARN) == (ARN, "app/db", "/app/db")
    assert parameter_ids("/app/db") == ("/app/db",)


async def test_hit_after_miss_and_string_shared_across_decryption() -> None:
    """A String is fetched once and then served under both decryption flags; a SecureString is cached per flag."""
    source, clock = FakeParameters(), Clock()
    source.put("/s", "plain")
    source.put("/k", "secret", kind="SecureString")
    cache = make(source, clock)
    assert (await cache.get("/s", decrypt=False)).outcome == "miss"
    assert (await cache.get("/s", decrypt=True)).outcome == "hit"
    assert (await cache.get("/k", decrypt=True)).value.value == "secret"
    lookup = await cache.get("/k", decrypt=False)
    assert (lookup.outcome, lookup.value.value) == ("miss", "ciphertext")
    assert source.calls["GetParameter"] == 3


async def test_concurrent_misses_make_one_call() -> None:
    """Concurrent reads of one uncached parameter share one upstream call."""
    source, clock = FakeParameters(), Clock()
    source.put("/s", "v")
    source.gate = asyncio.Event()
    cache = make(source, clock)
    reads = [asyncio.ensure_future(cache.get("/s", decrypt=True)) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    values = await asyncio.gather(*reads)
    assert {lookup.value.value for lookup in values} == {"v"}
    assert source.calls["GetParameter"] == 1


async def test_read_deadline_then_stale_if_error_and_backoff() -> None:
    """A hung upstream is a timeout at the deadline; a failing one serves the cached value and backs off."""
    source, clock = FakeParameters(), Clock()
    source.put("/s", "v")
    cache = make(source, clock, ttl=10, deadline=0.05)
    source.gate = asyncio.Event()
    with pytest.raises(UpstreamTimeout):
        await cache.get("/s", decrypt=True)
    source.gate.set()
    while cache._inflight:  # the abandoned call finishes on its own
        await asyncio.sleep(0)
    assert (await cache.get("/s", decrypt=True)).outcome == "hit"  # and filled the cache
    clock.now += 11
    source.fail_with = UpstreamUnavailable("down")
    stale = await cache.get("/s", decrypt=True)
    assert (stale.outcome, stale.value.value, stale.age) == ("stale", "v", 11)
    calls = source.calls["GetParameter"]
    assert (await cache.get("/s", decrypt=True)).outcome == "stale"
    assert source.calls["GetParameter"] == calls  # backing off: no call


async def test_hard_errors_are_not_hidden_and_not_found_is_remembered() -> None:
    """AccessDenied past the TTL reaches the reader; ParameterNotFound is answered without a call for its TTL."""
    source, clock = FakeParameters(), Clock()
    source.put("/s", "v")
    cache = make(source, clock, ttl=10)
    await cache.get("/s", decrypt=True)
    clock.now += 11
    source.fail_with = UpstreamDenied("no")
    with pytest.raises(UpstreamDenied):
        await cache.get("/s", decrypt=True)
    source.fail_with = None
    for _ in range(3):
        with pytest.raises(SecretNotFound):
            await cache.get("/missing", decrypt=True)
    assert source.calls["GetParameter"] == 3  # first read, the denied revalidation, one not-found


async def test_version_entries_never_expire() -> None:
    """name:version is immutable: served from cache however old."""
    source, clock = FakeParameters(), Clock()
    source.put("/s", "v1")
    source.put("/s", "v2")
    cache = make(source, clock, ttl=10)
    assert (await cache.get("/s:1", decrypt=True)).value.value == "v1"
    clock.now += 10_000
    assert (await cache.get("/s:1", decrypt=True)).outcome == "hit"


async def test_poll_rereads_only_changed_versions_and_drops_deleted() -> None:
    """A pass confirms unchanged parameters without reading values, re-reads a changed one, drops a deleted one."""
    source, clock = FakeParameters(), Clock()
    for name in ("/a", "/b", "/c"):
        source.put(name, "1")
    cache = make(source, clock, ttl=60)
    refresher = ParameterRefresher(cache, names=("/a", "/b", "/c"), paths=(), interval_seconds=30, poll=True)
    await refresher.prefetch()
    assert len(cache) == 6  # Strings filed under both decryption flags
    source.put("/b", "2")
    del source.values["/c"]
    clock.now += 50
    assert await refresher.poll_once() == 1  # one read refreshes a String under both flags
    assert source.calls["GetParameter"] == 1
    entry = cache.peek(param_key("/b", None, True))
    assert entry is not None and entry.value.value == "2"
    assert cache.peek(param_key("/c", None, True)) is None
    clock.now += 50  # past the TTL since prefetch, yet confirmed by the pass
    assert (await cache.get("/a", decrypt=True)).outcome == "hit"


async def test_prefetch_by_path() -> None:
    """Path prefetch loads every parameter under the path, none outside it."""
    source, clock = FakeParameters(), Clock()
    source.put("/svc/a", "1")
    source.put("/svc/x/b", "2")
    source.put("/other", "3")
    cache = make(source, clock)
    await ParameterRefresher(cache, names=(), paths=("/svc",), interval_seconds=30, poll=False).prefetch()
    assert cache.peek(param_key("/svc/x/b", None, True)) is not None
    assert cache.peek(param_key("/other", None, True)) is None
