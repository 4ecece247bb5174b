"""Rotation history, health and read usage: pure logic with injected clocks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from structlog.testing import capture_logs

from agent.cache.health import HealthBook, Signals, assess
from agent.cache.history import Change, RotationHistory
from agent.cache.rotations import Rotation
from agent.cache.store import SecretCache
from agent.cache.usage import MAX_CLIENTS_PER_SECRET, ReadUsage
from agent.cache.watch import RotationWatch
from agent.core.errors import UpstreamRejected, UpstreamThrottled
from agent.core.metrics import Metrics
from agent.core.types import AWSCURRENT, AWSPENDING, AWSPREVIOUS, CURRENT, SecretValue
from agent.upstream.source import SecretMeta, VersionInfo
from tests.support.fakes import FakeSource
from tests.support.waiting import eventually

NOW = 1_800_000_000.0
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
GRACE = 3600.0


def meta(**fields: Any) -> SecretMeta:
    return SecretMeta(arn=ARN, name="db", versions_to_stages={"v1": (AWSCURRENT,)}, **fields)


def signals(**fields: Any) -> Signals:
    base: dict[str, Any] = {
        "meta": meta(),
        "last_changed": None,
        "failed_event_at": None,
        "pending_created": {},
        "stale": False,
    }
    return Signals(**{**base, **fields})


def value(version: str, created: float | None = NOW - 10) -> SecretValue:
    return SecretValue(
        arn=ARN, name="db", version_id=version, version_stages=(AWSCURRENT,), created_date=created, secret_string="x"
    )


# ---------------------------------------------------------------- assess


def test_ok_without_rotation_or_trouble() -> None:
    """No schedule, no event, nothing pending, not stale: ok."""
    assert assess(signals(), NOW, GRACE)[0] == "ok"


def test_overdue_only_past_the_grace_and_without_a_change_since() -> None:
    """NextRotationDate passed by more than the grace with no change since: overdue; within grace or rotated: ok."""
    due = meta(rotation_enabled=True, next_rotation=NOW - GRACE - 1)
    assert assess(signals(meta=due), NOW, GRACE)[0] == "overdue"
    within = meta(rotation_enabled=True, next_rotation=NOW - GRACE + 1)
    assert assess(signals(meta=within), NOW, GRACE)[0] == "ok"
    assert assess(signals(meta=due, last_changed=NOW - GRACE), NOW, GRACE)[0] == "ok"
    disabled = meta(rotation_enabled=False, next_rotation=NOW - 10 * GRACE)
    assert assess(signals(meta=disabled), NOW, GRACE)[0] == "ok"


def test_failed_by_event_or_lingering_pending() -> None:
    """A rotation-failed event, or an AWSPENDING version older than the grace: failed (a young one is not)."""
    assert assess(signals(failed_event_at=NOW - 1), NOW, GRACE)[0] == "failed"
    health, reason = assess(signals(pending_created={"abcdef0123456789": NOW - GRACE - 1}), NOW, GRACE)
    assert health == "failed" and "abcdef01" in reason and "abcdef0123" not in reason
    assert assess(signals(pending_created={"young": NOW - 5}), NOW, GRACE)[0] == "ok"


def test_lingering_pending_failure_ends_when_a_new_current_is_seen() -> None:
    """An AWSPENDING label left on an abandoned version stops counting once a newer AWSCURRENT was seen after it."""
    abandoned = {"abandoned": NOW - 3 * GRACE}
    assert assess(signals(pending_created=abandoned), NOW, GRACE)[0] == "failed"
    assert assess(signals(pending_created=abandoned, current_seen_at=NOW - 4 * GRACE), NOW, GRACE)[0] == "failed"
    # Upstream's LastRotatedDate alone (it may move when a rotation starts) does not end it.
    assert assess(signals(pending_created=abandoned, last_changed=NOW - GRACE), NOW, GRACE)[0] == "failed"
    assert assess(signals(pending_created=abandoned, current_seen_at=NOW - GRACE), NOW, GRACE)[0] == "ok"


def test_states_by_precedence() -> None:
    """deleted beats failed beats overdue beats stale."""
    due = meta(rotation_enabled=True, next_rotation=NOW - 2 * GRACE)
    everything = signals(meta=due, failed_event_at=NOW, stale=True, deleted=True)
    assert assess(everything, NOW, GRACE)[0] == "deleted"
    assert assess(signals(meta=due, failed_event_at=NOW, stale=True), NOW, GRACE)[0] == "failed"
    assert assess(signals(meta=due, stale=True), NOW, GRACE)[0] == "overdue"
    assert assess(signals(stale=True), NOW, GRACE)[0] == "stale"
    assert assess(signals(meta=meta(deleted=True)), NOW, GRACE)[0] == "deleted"


# ---------------------------------------------------------------- HealthBook


def test_health_book_spans_gauge_and_one_warning_per_transition() -> None:
    """A transition opens (and later closes) a span and logs once; repeats log nothing; the gauge counts states."""
    counts: dict[str, int] = {}
    book = HealthBook(lambda state, count: counts.__setitem__(state, count))
    assert counts == {"ok": 0, "overdue": 0, "failed": 0, "stale": 0, "deleted": 0}
    with capture_logs() as logs:
        book.update(ARN, "db", "ok", "ok", NOW)
        book.update("other", "other", "ok", "ok", NOW)
        book.update(ARN, "db", "stale", "upstream", NOW + 1)
        book.update(ARN, "db", "stale", "upstream", NOW + 2)
        book.publish()
        assert counts["stale"] == 1 and counts["ok"] == 1
        book.update(ARN, "db", "ok", "ok", NOW + 3)
        book.publish()
    assert [(entry["health"], entry["previous"]) for entry in logs] == [("stale", "ok"), ("ok", "stale")]
    assert all(entry["log_level"] == "warning" for entry in logs)
    [span] = book.spans(ARN)
    assert (span.health, span.start, span.end) == ("stale", NOW + 1, NOW + 3)
    assert counts["stale"] == 0 and counts["ok"] == 2
    book.retain(["other"])
    book.publish()
    assert counts["ok"] == 1 and book.spans(ARN) == []


# ---------------------------------------------------------------- RotationHistory


def test_observed_rotation_recorded_with_its_delay() -> None:
    """A published rotation becomes a change: versions, how, seen_at and seen - CreatedDate."""
    history = RotationHistory()
    history.observe(Rotation(value("v2", created=NOW - 7), "v1", "poll", seen_at=NOW))
    [change] = history.changes(ARN)
    assert change == Change("v2", "v1", NOW, "poll", 7.0)
    assert history.superseded_at(ARN, "v1") == NOW and history.superseded_at(ARN, "v2") is None


def test_seeded_from_versions_in_creation_order() -> None:
    """ListSecretVersionIds: current and previous versions become changes at their CreatedDate; pending ones do not."""
    history = RotationHistory()
    versions = [
        VersionInfo("v3", (AWSPENDING,), created=NOW),
        VersionInfo("v2", (AWSCURRENT,), created=NOW - 100),
        VersionInfo("v1", (AWSPREVIOUS,), created=NOW - 200),
    ]
    assert history.seed(ARN, versions) == 2
    assert [(c.version_id, c.previous_version_id, c.seen_at, c.how) for c in history.changes(ARN)] == [
        ("v2", "v1", NOW - 100, "history"),
        ("v1", None, NOW - 200, "history"),
    ]


def test_restored_change_wins_over_seeded_one() -> None:
    """The same version learnt from the audit file and from upstream is kept once, as the agent observed it."""
    history = RotationHistory()
    history.restore(ARN, Change("v2", "v1", NOW - 90, "event", 10.0))
    history.seed(ARN, [VersionInfo("v2", (AWSCURRENT,), created=NOW - 100)])
    assert [(c.version_id, c.how) for c in history.changes(ARN)] == [("v2", "event")]


def test_observed_change_replaces_an_inferred_one() -> None:
    """Seeded first (a rotation racing the seed), then observed: the observed account stays, never the reverse."""
    history = RotationHistory()
    history.seed(ARN, [VersionInfo("v2", (AWSCURRENT,), created=NOW), VersionInfo("v1", (AWSPREVIOUS,), created=NOW)])
    history.observe(Rotation(value("v2", created=NOW), "v1", "poll", seen_at=NOW + 1))
    history.seed(ARN, [VersionInfo("v2", (AWSCURRENT,), created=NOW)])
    assert [(c.version_id, c.previous_version_id, c.how) for c in history.changes(ARN)] == [
        ("v2", "v1", "poll"),
        ("v1", None, "history"),
    ]


def test_seeded_version_never_dated_after_its_successor_was_seen() -> None:
    """Upstream dating a replaced version later than its replacement was seen (moto: the call's time) is clamped."""
    history = RotationHistory()
    history.restore(ARN, Change("v2", "v1", NOW, "poll", 1.0))
    history.seed(ARN, [VersionInfo("v1", (AWSPREVIOUS,), created=NOW + 500)])
    assert [(c.version_id, c.seen_at) for c in history.changes(ARN)] == [("v2", NOW), ("v1", NOW)]


def test_rollback_to_an_earlier_version_is_a_change_of_its_own() -> None:
    """AWSCURRENT moved back to a version current before (a rollback) is recorded; the same change twice once."""
    history = RotationHistory()
    history.observe(Rotation(value("v2"), "v1", "poll", seen_at=NOW))
    history.observe(Rotation(value("v1"), "v2", "poll", seen_at=NOW + 10))
    assert history.superseded_at(ARN, "v1") is None and history.superseded_at(ARN, "v2") == NOW + 10
    history.observe(Rotation(value("v2"), "v1", "event", seen_at=NOW + 20))
    history.observe(Rotation(value("v2"), "v1", "poll", seen_at=NOW + 21))  # reported twice (a role's cache)
    assert [(c.version_id, c.previous_version_id, c.seen_at) for c in history.changes(ARN)] == [
        ("v2", "v1", NOW + 20),
        ("v1", "v2", NOW + 10),
        ("v2", "v1", NOW),
    ]
    assert history.last_changed(ARN) == NOW + 20 and history.superseded_at(ARN, "v1") == NOW + 20


def test_history_bounded_keeping_the_newest() -> None:
    """Past per_secret changes the oldest (by seen_at) go, whatever order they arrived in."""
    history = RotationHistory(per_secret=3)
    for index in (5, 1, 4, 2, 3):
        history.add(ARN, Change(f"v{index}", None, NOW + index, "poll", None))
    assert [c.version_id for c in history.changes(ARN)] == ["v5", "v4", "v3"]


# ---------------------------------------------------------------- ReadUsage


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reads_per_client_last_hour_day_and_denials() -> None:
    """Reads count in the last hour and day; denials count apart; older reads fall out of both."""
    clock = Clock(NOW)
    usage = ReadUsage(RotationHistory(), wall_clock=clock)
    usage.note(ARN, "app", "v1", allowed=True)
    clock.now += 2 * 3600
    usage.note(ARN, "app", "v1", allowed=True)
    usage.note(ARN, "app", "v1", allowed=True)
    usage.note(ARN, "intruder", None, allowed=False)
    reads = {r.client: r for r in usage.reads(ARN)}
    assert (reads["app"].last_hour, reads["app"].last_day, reads["app"].denied) == (2, 3, 0)
    assert (reads["intruder"].last_hour, reads["intruder"].last_day, reads["intruder"].denied) == (0, 0, 1)
    assert [count for _start, count in reads["app"].hourly] == [1, 2]
    clock.now += 2 * 86_400
    [app, _intruder] = usage.reads(ARN)
    assert (app.last_hour, app.last_day, len(app.hourly)) == (0, 0, 2)  # still on the 30-day strip


def test_old_version_readers_only_after_the_change_was_seen() -> None:
    """Reading v1 before its replacement was seen is not an old read; after, it is; the current version never is."""
    clock = Clock(NOW)
    history = RotationHistory()
    usage = ReadUsage(history, wall_clock=clock)
    usage.note(ARN, "app", "v1", allowed=True)
    history.observe(Rotation(value("v2"), "v1", "event", seen_at=NOW + 1))
    clock.now = NOW + 2
    usage.note(ARN, "app", "v1", allowed=True)
    usage.note(ARN, "app", "v1", allowed=True)
    usage.note(ARN, "web", "v2", allowed=True)
    usage.note(ARN, "cron", "v1", allowed=False)
    [old] = usage.old_version_readers(ARN, "v2")
    assert (old.client, old.version_id, old.reads, old.last_read) == ("app", "v1", 2, NOW + 2)


def test_usage_bounded_in_clients() -> None:
    """A secret keeps at most MAX_CLIENTS_PER_SECRET clients (the least recent go)."""
    clients = MAX_CLIENTS_PER_SECRET + 50
    usage = ReadUsage(RotationHistory(), wall_clock=Clock(NOW))
    for index in range(clients):
        usage.note(ARN, f"c{index}", "v1", allowed=True)
    kept = {r.client for r in usage.reads(ARN)}
    assert len(kept) == MAX_CLIENTS_PER_SECRET and f"c{clients - 1}" in kept and "c0" not in kept


# ---------------------------------------------------------------- RotationWatch task


class FlakyWatch(RotationWatch):
    """A watch whose first ``failures`` assessments raise (a bug in one pass)."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.assessed = 0

    async def _assess(self, arn: str, now: float, mono: float) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in one pass")
        pending = await super()._assess(arn, now, mono)
        self.assessed += 1
        return pending


class BrokenVersions(FakeSource):
    """ListSecretVersionIds fails with something that is not an UpstreamError (an untranslated botocore error)."""

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        raise KeyError("VersionStages")


async def watch_over(source: FakeSource, *, failures: int = 0) -> tuple[FlakyWatch, str]:
    cache = SecretCache(source, ttl_seconds=300, max_entries=10, max_stale_seconds=86_400)
    arn = (await cache.get("db", CURRENT)).value.arn
    watch = FlakyWatch(
        cache, source, Metrics(), grace_seconds=GRACE, interval_seconds=0, stale_after_seconds=None, failures=failures
    )
    return watch, arn


async def run_until_assessed(watch: FlakyWatch, arn: str) -> None:
    prefetched = asyncio.Event()
    prefetched.set()
    task = asyncio.create_task(watch.run(prefetched, lambda: [arn]))
    try:
        # task.result() re-raises at once if the task died: the test then fails with its exception.
        await eventually(lambda: (task.result() if task.done() else None) or watch.assessed > 0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_watch_keeps_assessing_after_a_pass_raises() -> None:
    """An exception in one health pass is logged and the next pass runs: health is never frozen for good."""
    source = FakeSource()
    source.add("db", "pw")
    watch, arn = await watch_over(source, failures=1)
    with capture_logs() as logs:
        await run_until_assessed(watch, arn)
    assert any(entry["event"] == "health_pass_crashed" and entry["log_level"] == "error" for entry in logs)


async def test_watch_assesses_health_when_the_history_seed_raises() -> None:
    """A seed call failing with a non-upstream error skips the seed, never the health watch."""
    source = BrokenVersions()
    source.add("db", "pw")
    watch, arn = await watch_over(source)
    with capture_logs():
        await run_until_assessed(watch, arn)
    assert watch.history.changes(arn) == []


async def test_pending_versions_forgotten_once_no_longer_pending() -> None:
    """A version that stopped being AWSPENDING is no longer tracked: one entry per rotation would grow for good."""
    source = FakeSource()
    source.add("db", "pw")
    watch, arn = await watch_over(source)
    cache = watch._cache
    for n in range(5):  # five rotations, each seen mid-way with its AWSPENDING version
        stages = {f"v{n}": (AWSCURRENT,), f"v{n + 1}": (AWSPENDING,)}
        cache.metadata.put(SecretMeta(arn=arn, name="db", versions_to_stages=stages), 0.0)
        await watch.assess_all()
    cache.metadata.put(SecretMeta(arn=arn, name="db", versions_to_stages={"v5": (AWSCURRENT,)}), 0.0)
    await watch.assess_all()
    for task in list(watch._lookups):
        await task
    await watch.assess_all()
    assert (watch._pending, watch._asked) == ({}, set())


async def test_seeding_stops_at_the_first_throttle() -> None:
    """A throttled ListSecretVersionIds ends seeding (history is never worth slowing reads); a refusal skips one."""
    source = FakeSource()
    arns = [source.add(name, "v").arn for name in ("a", "b", "c")]
    cache = SecretCache(source, ttl_seconds=300, max_entries=10, max_stale_seconds=60)
    watch = RotationWatch(cache, source, Metrics(), grace_seconds=60, interval_seconds=1, stale_after_seconds=None)
    source.fail_with = UpstreamRejected("no", code="AccessDeniedException")
    await watch.seed(arns)
    assert sum(count for key, count in source.calls.items() if key.startswith("versions:")) == 3
    source.calls.clear()
    source.fail_with = UpstreamThrottled("slow down", code="ThrottlingException")
    with capture_logs() as logs:
        await watch.seed(arns)
    assert sum(count for key, count in source.calls.items() if key.startswith("versions:")) == 1
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["history_seed_stopped"]
