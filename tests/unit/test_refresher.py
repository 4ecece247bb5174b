"""Refresher logic against the fake source: detection, listing plans, direct checks."""

from __future__ import annotations

import dataclasses
import time

from agent.cache.refresher import Refresher
from agent.cache.store import SecretCache
from agent.config import PrefetchSettings, RefreshSettings
from agent.core.metrics import Metrics
from agent.core.types import CURRENT
from agent.upstream.source import SecretMeta
from tests.support.fakes import FakeSource


def build(source: FakeSource, names: list[str]) -> tuple[SecretCache, Refresher]:
    cache = SecretCache(source, ttl_seconds=300, max_entries=1000, max_stale_seconds=86_400)
    prefetch = PrefetchSettings(secrets=tuple(names), name_prefixes=(), tags=())
    refresher = Refresher(
        source,
        cache,
        prefetch,
        RefreshSettings(mode="poll", interval_seconds=30),
        max_stale_seconds=86_400,
        metrics=Metrics(),
    )
    return cache, refresher


async def test_unchanged_pass_reads_no_values() -> None:
    """A pass over unchanged secrets lists them once and reads no value."""
    source = FakeSource()
    names = [f"s{i}" for i in range(5)]
    for name in names:
        source.add(name, "v")
    _cache, refresher = build(source, names)
    await refresher.prefetch()
    source.calls.clear()
    await refresher.poll_once()
    assert source.calls["ListSecrets"] == 1
    assert not any(source.calls[name] for name in names)


async def test_moved_secret_is_reread_and_installed() -> None:
    """A secret whose AWSCURRENT moved is re-read; the others are only confirmed."""
    source = FakeSource()
    source.add("a", "one")
    source.add("b", "same")
    cache, refresher = build(source, ["a", "b"])
    await refresher.prefetch()
    source.add("a", "two", version="v2")
    await refresher.poll_once()
    assert (await cache.get("a", CURRENT)).value.secret_string == "two"
    assert source.calls["b"] == 0


async def test_list_plan_switches_to_named_for_large_accounts() -> None:
    """When the account holds far more secrets than the cache, listing switches to name filters."""
    source = FakeSource()
    for i in range(450):
        source.add(f"other/{i}", "x")
    source.add("mine", "v")
    _cache, refresher = build(source, ["mine"])
    await refresher.prefetch()
    await refresher.poll_once()
    assert refresher._list_plan == "named"


async def test_secrets_near_rotation_are_described_every_pass() -> None:
    """A secret whose NextRotationDate is due is confirmed with DescribeSecret on every pass."""
    source = FakeSource()
    secret = source.add("due", "v")
    _cache, refresher = build(source, ["due"])
    await refresher.prefetch()
    original = source.meta

    def meta_with_rotation(value: object) -> SecretMeta:
        return dataclasses.replace(original(value), next_rotation=time.time() + 5)  # type: ignore[arg-type]

    source.meta = meta_with_rotation  # type: ignore[method-assign]
    for _ in range(3):
        await refresher.poll_once()
    assert source.calls[f"describe:{secret.arn}"] >= 3
