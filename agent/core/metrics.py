"""Prometheus metrics, on a registry of the agent's own (not the global one).

Label values are routes, statuses, operations and outcomes: never a secret
value, a token, or a secret name (names would also make cardinality unbounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The *_created series double the exposition size and nobody here graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class Metrics:
    """The agent's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "secrets_agent_requests",
            "HTTP requests served, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "secrets_agent_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "secrets_agent_cache_lookups",
            "Cache lookups by outcome (hit, miss, refresh, revalidated, revalidating, stale, negative, error).",
            ["outcome"],
            registry=self.registry,
        )
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
        self.reads = Counter(
            "secrets_agent_reads",
            "Secret read attempts by client and policy decision (allow, deny).",
            ["client", "decision"],
            registry=self.registry,
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
        self.fast_path_answers = Counter(
            "secrets_agent_fast_path_answers",
            "Requests answered by the hot path below aiohttp (fresh cache hits, health); the rest went to aiohttp.",
            registry=self.registry,
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

        # labels() takes a lock and builds a key on every call; the request path
        # is hot, so resolved children are kept here (the label sets are small).
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._lookup_children: dict[str, Any] = {}
        self.lookup_counts: dict[str, int] = {}  # the same counts, cheap to read (for /status)
        self._read_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one served request and its duration."""
        children = self._request_children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.request_seconds.labels(route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_read(self, client: str, decision: str) -> None:
        """Count one read attempt by client and policy decision."""
        child = self._read_children.get((client, decision))
        if child is None:
            child = self._read_children[(client, decision)] = self.reads.labels(client, decision)
        child.inc()

    def observe_upstream(self, operation: str, outcome: str) -> None:
        """Count one upstream call."""
        self.upstream_calls.labels(operation, outcome).inc()

    def observe_lookup(self, outcome: str) -> None:
        """Count one cache lookup."""
        child = self._lookup_children.get(outcome)
        if child is None:
            child = self._lookup_children[outcome] = self.cache_lookups.labels(outcome)
        child.inc()
        self.lookup_counts[outcome] = self.lookup_counts.get(outcome, 0) + 1

    def render(self, staleness: list[float] | None = None) -> bytes:
        """The exposition text; ``staleness`` is seconds since confirmation of each cached entry."""
        self._staleness.ages = list(staleness or ())
        return generate_latest(self.registry)


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
