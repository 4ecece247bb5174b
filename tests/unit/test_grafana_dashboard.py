"""config/grafana/secrets-agent.json: every query names only series the agent exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.core.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "secrets-agent.json"

# PromQL words that are not metric names: aggregation modifiers, set and vector-matching keywords.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Series each metric type exposes, by the family name prometheus_client reports.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


def exported_series() -> set[str]:
    """Every series name a scrape of the agent can carry, from its own registry."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or variables)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals: label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    # Label lists after by/without/on/ignoring/group_left/group_right.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__interval, ${job})
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS or text[match.start() - 1 : match.start()].isdigit():
            continue  # a function call, a keyword, or a number's exponent/suffix (1e3, 5m)
        names.add(word)
    return names


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)  # label_values(selector, label)
            yield f"variable {variable['name']}", inner.group(1) if inner else text


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def test_every_query_names_only_exported_metrics() -> None:
    """Each panel query and variable names at least one metric, and only series the agent's registry exports."""
    exported = exported_series()
    queries = list(dashboard_queries(_load()))
    assert queries
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by the agent"


def test_extractor_catches_a_misspelt_metric() -> None:
    """The check would fail on a typo, and is not fooled by functions, labels, ranges or variables."""
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(secrets_agent_request_duration_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) / on(instance) group_left sum without (x) (secrets_agnet_requests_total offset 5m)"
    )
    assert metric_names(expr) == {"secrets_agent_request_duration_seconds_bucket", "secrets_agnet_requests_total"}
    assert "secrets_agnet_requests_total" not in exported_series()
    assert "secrets_agent_requests" not in exported_series()  # a counter is scraped as _total only
    assert "secrets_agent_request_duration_seconds" not in exported_series()


def test_dashboard_covers_what_operators_ask() -> None:
    """Panels show requests, latency, hit ratio, upstream calls, rotations, staleness, health, auth and rate limits."""
    used = set().union(*(metric_names(expr) for _where, expr in dashboard_queries(_load())))
    for needed in (
        "secrets_agent_requests_total",
        "secrets_agent_request_duration_seconds_bucket",
        "secrets_agent_cache_lookups_total",
        "secrets_agent_upstream_calls_total",
        "secrets_agent_rotations_total",
        "secrets_agent_staleness_max_seconds",
        "secrets_agent_secrets",
        "secrets_agent_auth_failures_total",
        "secrets_agent_rate_limited_total",
    ):
        assert needed in used, needed


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    """Panel ids are unique (Grafana needs them) and every query goes to the chosen Prometheus data source."""
    dashboard = _load()
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
