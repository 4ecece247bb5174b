"""Per-request counts kept as plain ints are exposed exactly as prometheus-client's own families would be."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agent.core.metrics import REQUEST_BUCKETS, Metrics

DURATIONS = [
    ("v1", 200, 0.0002),
    ("v1", 200, 0.0005),  # on a bound: counted in that bucket, as Histogram does
    ("get", 200, 12.0),  # past the last bound: +Inf only
    ("v1", 403, 0.003),
    ("ping", 200, 1.0),
    ("v1", 500, 0.25),
]


def family(text: bytes, name: str) -> bytes:
    """One family's block of an exposition: its HELP line up to the next family's."""
    start = text.index(b"# HELP " + name.encode() + b" ")
    end = text.find(b"# HELP ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_request_and_read_families_match_prometheus_client() -> None:
    """Requests, durations, reads, lookups and hot-path answers expose the text Counter and Histogram would."""
    ours = Metrics()
    registry = CollectorRegistry()
    requests = Counter(
        "secrets_agent_requests", "HTTP requests served, by route and status.", ["route", "status"], registry=registry
    )
    seconds = Histogram(
        "secrets_agent_request_duration_seconds",
        "Time to answer a request, by route.",
        ["route"],
        buckets=REQUEST_BUCKETS,
        registry=registry,
    )
    reads = Counter(
        "secrets_agent_reads",
        "Secret read attempts by client and policy decision (allow, deny).",
        ["client", "decision"],
        registry=registry,
    )
    answers = Counter(
        "secrets_agent_fast_path_answers",
        "Requests answered by the hot path below aiohttp (fresh cache hits, health); the rest went to aiohttp.",
        registry=registry,
    )
    for route, status, elapsed in DURATIONS:
        ours.observe_request(route, status, elapsed)
        requests.labels(route, str(status)).inc()
        seconds.labels(route).observe(elapsed)
    for client, decision in [("app", "allow"), ("other", "deny"), ("app", "allow")]:
        ours.observe_read(client, decision)
        reads.labels(client, decision).inc()
    for _ in range(2):
        ours.observe_fast_path()
        answers.inc()
    for outcome in ["hit", "miss", "hit"]:
        ours.observe_lookup(outcome)

    theirs = generate_latest(registry)
    exposed = ours.render([])
    for name in (
        "secrets_agent_requests_total",
        "secrets_agent_request_duration_seconds",
        "secrets_agent_reads_total",
        "secrets_agent_fast_path_answers_total",
    ):
        assert family(exposed, name) == family(theirs, name), name
    assert b'secrets_agent_cache_lookups_total{outcome="hit"} 2.0' in exposed
    assert ours.lookup_counts == {"hit": 2, "miss": 1}
