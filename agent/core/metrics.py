"""Prometheus metrics, on a registry of the agent's own (not the global one).

Label values are routes, statuses, operations and outcomes: never a secret
value, a token, or a secret name (names would also make cardinality unbounded).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The *_created series double the exposition size and nobody here graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class Metrics:
    """The agent's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Counted on every request: plain ints, read at scrape (see _Counts).
        self.requests = self._counts(
            "secrets_agent_requests", "HTTP requests served, by route and status.", ("route", "status")
        )
        self.request_seconds = _Durations(
            "secrets_agent_request_duration_seconds", "Time to answer a request, by route.", REQUEST_BUCKETS
        )
        self.registry.register(self.request_seconds)
        self.cache_lookups = self._counts(
            "secrets_agent_cache_lookups",
            "Cache lookups by outcome (hit, miss, refresh, revalidated, revalidating, stale, negative, error).",
            ("outcome",),
        )
        self.lookup_counts = self.cache_lookups.counts  # read by /status
        self.upstream_calls = Counter(
            "secrets_agent_upstream_calls",
            "Secrets Manager API calls by operation and outcome (ok or the error code).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "secrets_agent_cache_entries",
            "Secret versions held in the cache.",
            registry=self.registry,
        )
        self.rotations = Counter(
            "secrets_agent_rotations",
            "AWSCURRENT moves the agent installed, by how it learned (poll, event, read).",
            ["how"],
            registry=self.registry,
        )
        self.poll_passes = Counter(
            "secrets_agent_poll_passes",
            "Completed change-detection passes.",
            registry=self.registry,
        )
        self.reads = self._counts(
            "secrets_agent_reads",
            "Secret read attempts by client and policy decision (allow, deny).",
            ("client", "decision"),
        )
        self.auth_failures = Counter(
            "secrets_agent_auth_failures",
            "Requests refused for identity, by reason (missing_token, wrong_token, unknown_peer, "
            "and on the SDK endpoint unknown_key, bad_signature).",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "secrets_agent_rate_limited",
            "Requests refused by a client's rate_per_second.",
            ["client"],
            registry=self.registry,
        )
        self.refresh_plan = Gauge(
            "secrets_agent_refresh_plan",
            "1 for the change-detection plan in use (list: ListSecrets, describe: DescribeSecret per secret).",
            ["plan"],
            registry=self.registry,
        )
        self.refresh_interval = Gauge(
            "secrets_agent_refresh_interval_seconds",
            "Seconds between change-detection passes; above refresh.interval_seconds when stretched "
            "to stay within the fleet's quota share.",
            registry=self.registry,
        )
        self.refresh_staleness_bound = Gauge(
            "secrets_agent_refresh_staleness_bound_seconds",
            "The longest a rotation can go unseen by polling under the current plan.",
            registry=self.registry,
        )
        self.batch_fallbacks = Counter(
            "secrets_agent_batch_fallbacks",
            "Secrets fetched one by one with GetSecretValue because BatchGetSecretValue was throttled.",
            registry=self.registry,
        )
        self._staleness = _StalenessCollector()
        self.registry.register(self._staleness)
        self.event_messages = Counter(
            "secrets_agent_event_messages",
            "SQS event messages by outcome (handled, ignored, malformed, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.fast_path_answers = self._counts(
            "secrets_agent_fast_path_answers",
            "Requests answered by the hot path below aiohttp (fresh cache hits, health); the rest went to aiohttp.",
            (),
        )
        self.audit_failures = Counter(
            "secrets_agent_audit_failures",
            "Audit trail failures: a record that could not be written (write), a failed reopen (reopen).",
            ["kind"],
            registry=self.registry,
        )
        self.secret_health = Gauge(
            "secrets_agent_secrets",
            "Cached secrets by rotation health (ok, overdue, failed, stale, deleted).",
            ["health"],
            registry=self.registry,
        )
        self.audit_healthy = Gauge(
            "secrets_agent_audit_healthy",
            "1 while the audit trail is healthy (or off); 0 after a failed reopen, or while writes fail.",
            registry=self.registry,
        )

    def _counts(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> _Counts:
        counts = _Counts(name, documentation, labelnames)
        self.registry.register(counts)
        return counts

    # The observe_* methods below run on the event loop thread only (request handling, the
    # cache): their counts are plain ints, with no lock. observe_upstream runs in worker threads.

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one served request and its duration."""
        counts = self.requests.counts
        key = (route, status)
        counts[key] = counts.get(key, 0) + 1
        self.request_seconds.observe(route, seconds)

    def observe_read(self, client: str, decision: str) -> None:
        """Count one read attempt by client and policy decision."""
        counts = self.reads.counts
        key = (client, decision)
        counts[key] = counts.get(key, 0) + 1

    def observe_fast_path(self) -> None:
        """Count one request the hot path answered."""
        counts = self.fast_path_answers.counts
        counts[()] += 1

    def observe_upstream(self, operation: str, outcome: str) -> None:
        """Count one upstream call."""
        self.upstream_calls.labels(operation, outcome).inc()

    def observe_lookup(self, outcome: str) -> None:
        """Count one cache lookup."""
        counts = self.lookup_counts
        counts[outcome] = counts.get(outcome, 0) + 1

    def render(self, staleness: list[float] | None = None) -> bytes:
        """The exposition text; ``staleness`` is seconds since confirmation of each cached entry."""
        self._staleness.ages = list(staleness or ())
        return generate_latest(self.registry)


REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Counts(Collector):
    """A counter family kept as plain ints, exposed as prometheus-client's ``Counter`` would be.

    Every request used to pay for several ``Counter``/``Histogram`` updates
    (each takes a lock and checks its state): a few microseconds per request
    on the hot path (issue 13). A dict increment on the event loop thread is
    all a count needs; the family is built from the ints at scrape time, with
    the same name, samples and label values as before. ``counts`` maps label
    values (a status as an int) to the count; a family without labels has the
    one key ``()``, present from the start as a ``Counter``'s 0 is.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self.counts: dict[Any, int] = {} if labelnames else {(): 0}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, count in list(self.counts.items()):
            values = key if isinstance(key, tuple) else (key,)
            family.add_metric([str(value) for value in values], count)
        yield family


class _Durations(Collector):
    """A histogram family by route, kept as plain ints (see :class:`_Counts`); ``le`` as prometheus-client writes it."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = bounds
        self._les = [floatToGoString(bound) for bound in (*bounds, float("inf"))]  # type: ignore[no-untyped-call]
        self._routes: dict[str, tuple[list[int], list[float]]] = {}  # route -> (count per bucket, [sum])

    def observe(self, route: str, seconds: float) -> None:
        """Count one duration: in the first bucket whose bound is at least ``seconds``, as a ``Histogram`` does."""
        cells = self._routes.get(route)
        if cells is None:
            cells = self._routes[route] = ([0] * len(self._les), [0.0])
        cells[0][bisect_left(self._bounds, seconds)] += 1
        cells[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=("route",))
        for route, (buckets, total) in list(self._routes.items()):
            family.add_metric([route], list(zip(self._les, itertools.accumulate(buckets), strict=True)), total[0])
        yield family


STALENESS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0)


class _StalenessCollector(Collector):
    """Staleness of cached entries as a histogram and a max gauge, computed at scrape time.

    Per-secret gauges would need the secret's name as a label; a histogram
    answers "how stale is the cache" without naming anything.
    """

    def __init__(self) -> None:
        self.ages: list[float] = []

    def collect(self) -> Iterator[Metric]:
        ages = self.ages
        buckets = [(f"{bound:g}", float(sum(1 for age in ages if age <= bound))) for bound in STALENESS_BUCKETS]
        buckets.append(("+Inf", float(len(ages))))
        yield HistogramMetricFamily(
            "secrets_agent_staleness_seconds",
            "Seconds since upstream last confirmed each cached entry, at scrape time.",
            buckets=buckets,
            sum_value=sum(ages),
        )
        yield GaugeMetricFamily(
            "secrets_agent_staleness_max_seconds",
            "Largest seconds since confirmation over cached entries.",
            value=max(ages, default=0.0),
        )
