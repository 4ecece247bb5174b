"""Prometheus metrics, on a registry of the agent's own (not the global one).

Label values are routes, statuses, operations and outcomes: never a secret
value, a token, or a secret name (names would also make cardinality unbounded).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
            "Cache lookups by outcome (hit, miss, refresh).",
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

        # labels() takes a lock and builds a key on every call; the request path
        # is hot, so resolved children are kept here (the label sets are small).
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._lookup_children: dict[str, Any] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one served request and its duration."""
        children = self._request_children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.request_seconds.labels(route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_upstream(self, operation: str, outcome: str) -> None:
        """Count one upstream call."""
        self.upstream_calls.labels(operation, outcome).inc()

    def observe_lookup(self, outcome: str) -> None:
        """Count one cache lookup."""
        child = self._lookup_children.get(outcome)
        if child is None:
            child = self._lookup_children[outcome] = self.cache_lookups.labels(outcome)
        child.inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
