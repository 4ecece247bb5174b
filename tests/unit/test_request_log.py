"""Request accounting: routine requests summarised, everything else logged at once, metrics for all."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from agent.core.metrics import Metrics
from agent.server.requestlog import RequestLog, request_fields


def line(route: str = "v1", status: int = 200, client: str = "app", **extra: Any) -> dict[str, Any]:
    return request_fields(
        method="GET",
        route=route,
        status=status,
        elapsed=0.0001,
        listener="tcp",
        client=client,
        request_id="r-1",
        **extra,
    )


def requests_total(metrics: Metrics, route: str) -> float | None:
    return metrics.registry.get_sample_value("secrets_agent_requests_total", {"route": route, "status": "200"})


def test_routine_reads_are_summarised_by_route_status_and_client() -> None:
    """Cache hits and health checks log at debug and land in one info summary line with their counts."""
    metrics = Metrics()
    requests = RequestLog(metrics, summary_interval_seconds=60)
    with capture_logs() as logs:
        for _ in range(3):
            requests.record(line(cache="hit", secret_id="app/db"), 0.0001)
        requests.record(line(route="ping", client="-"), 0.0001)
        requests.flush()
    assert [entry["log_level"] for entry in logs if entry["event"] == "request"] == ["debug"] * 4
    (summary,) = [entry for entry in logs if entry["event"] == "requests_summary"]
    assert summary["log_level"] == "info" and summary["total"] == 4
    assert summary["counts"] == [
        {"route": "ping", "status": 200, "client": "-", "count": 1},
        {"route": "v1", "status": 200, "client": "app", "count": 3},
    ]
    assert requests_total(metrics, "v1") == 3 and requests_total(metrics, "ping") == 1


def test_errors_denials_and_upstream_reads_are_logged_at_once() -> None:
    """A refusal, an error and a read that went upstream each get their own info line and stay out of the summary."""
    requests = RequestLog(Metrics(), summary_interval_seconds=60)
    with capture_logs() as logs:
        requests.record(line(status=403, error="AccessDeniedException"), 0.0001)
        requests.record(line(status=404, cache="negative", error="ResourceNotFoundException"), 0.0001)
        requests.record(line(cache="miss", secret_id="app/db"), 0.0001)
        requests.record(line(cache="stale", secret_id="app/db"), 0.0001)
        requests.flush()
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("request", "info")] * 4


def test_interval_zero_logs_every_request_at_info() -> None:
    """With summary_interval_seconds = 0 every request is one info line and no summary is written."""
    requests = RequestLog(Metrics(), summary_interval_seconds=0)
    with capture_logs() as logs:
        requests.record(line(cache="hit"), 0.0001)
        requests.flush()
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("request", "info")]


def test_summary_is_not_repeated_when_nothing_happened() -> None:
    """A flush with no routine request since the last one writes nothing."""
    requests = RequestLog(Metrics(), summary_interval_seconds=60)
    with capture_logs() as logs:
        requests.record(line(cache="hit"), 0.0001)
        requests.flush()
        requests.flush()
    assert [entry["event"] for entry in logs].count("requests_summary") == 1


def test_routine_shortcut_accounts_as_record_does() -> None:
    """routine() counts a 200 into the summary and metrics as record() does, with no line; at interval 0 it declines."""
    by_record, by_shortcut = Metrics(), Metrics()
    recorded = RequestLog(by_record, summary_interval_seconds=60)
    shortcut = RequestLog(by_shortcut, summary_interval_seconds=60)
    shortcut._debug = False  # as at the default level, info (the tests log at debug)
    with capture_logs() as logs:
        recorded.record(line(cache="hit", secret_id="app/db"), 0.0001)
        recorded.record(line(route="ping", client="-"), 0.0001)
        assert shortcut.routine("v1", "app", 0.0001)
        assert shortcut.routine("ping", "-", 0.0001)
        assert not [entry for entry in logs if entry["log_level"] != "debug"]
        recorded.flush()
        shortcut.flush()
    summaries = [entry["counts"] for entry in logs if entry["event"] == "requests_summary"]
    assert summaries[0] == summaries[1]
    assert by_record.render() == by_shortcut.render()
    assert not RequestLog(Metrics(), summary_interval_seconds=0).routine("v1", "app", 0.0001)


def test_a_flood_of_refusals_is_capped_per_interval_and_counted() -> None:
    """Past request_lines_per_interval lines for one route, status and client: one warning, the rest summarised."""
    metrics = Metrics()
    requests = RequestLog(metrics, summary_interval_seconds=60, request_lines_per_interval=3)
    with capture_logs() as logs:
        for _ in range(10):
            requests.record(line(status=403, client="-", error="AccessDeniedException"), 0.0001)
        requests.record(line(status=404, error="ResourceNotFoundException"), 0.0001)  # another key: its own budget
        requests.flush()
        requests.record(line(status=403, client="-", error="AccessDeniedException"), 0.0001)  # a new interval
    at_once = [entry for entry in logs if entry["event"] == "request" and entry["log_level"] == "info"]
    assert [entry["status"] for entry in at_once] == [403, 403, 403, 404, 403]
    warnings = [entry for entry in logs if entry["event"] == "request_lines_suppressed"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and warnings[0]["limit"] == 3
    (summary,) = [entry for entry in logs if entry["event"] == "requests_summary"]
    assert summary["suppressed"] == 7 and summary["total"] == 7
    assert summary["counts"] == [{"route": "v1", "status": 403, "client": "-", "count": 7}]
    assert metrics.registry.get_sample_value("secrets_agent_requests_total", {"route": "v1", "status": "403"}) == 11


def test_no_cap_without_summaries() -> None:
    """With summary_interval_seconds = 0 there is no summary to count into: every line is written."""
    requests = RequestLog(Metrics(), summary_interval_seconds=0, request_lines_per_interval=1)
    with capture_logs() as logs:
        for _ in range(5):
            requests.record(line(status=403, error="AccessDeniedException"), 0.0001)
    assert [entry["log_level"] for entry in logs] == ["info"] * 5
