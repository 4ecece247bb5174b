"""``secrets-agent status`` rendering: order, one-line timelines, colour only when asked, exit codes."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from agent.cli.exit_codes import EXIT_OK, EXIT_UNHEALTHY
from agent.cli.status import STRIP_WIDTH, exit_status, render, show, strip
from agent.core.errors import AgentUnreachable, ReadDenied

NOW = "2026-11-30T12:00:00Z"
ANSI = re.compile(r"\x1b\[")


def _secret(name: str, health: str, **extra: Any) -> dict[str, Any]:
    secret: dict[str, Any] = {
        "name": name,
        "arn": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf",
        "version_id": "0123456789abcdef-" + name,
        "versions": [],
        "health": health,
        "last_checked": NOW,
        "last_changed": "2026-11-30T11:00:00Z",
        "rotation": {"enabled": True, "schedule": "rate(1 day)", "last": None, "next": "2026-12-01T00:00:00Z"},
        "staleness_seconds": 1.0,
        "spans": [],
        "reads": [{"client": "app", "last_hour": 3, "last_day": 40, "denied": 1, "hourly": []}],
        "old_version_readers": [],
        "history": [],
    }
    secret.update(extra)
    return secret


def _status(*secrets: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent": {"version": "0.1.0", "started_at": NOW, "now": NOW, "uptime_seconds": 5.0, "ready": True},
        "upstream": {"healthy": True, "last_success": NOW, "failure_burst": 0, "last_error": None},
        "cache": {"secrets": len(secrets), "entries": len(secrets), "hits": 1, "misses": 1, "hit_ratio": 0.5},
        "secrets": list(secrets),
    }


def test_plain_text_and_exit_zero_when_all_healthy() -> None:
    """All ok (or deleted): exit 0, and without colour the output has no ANSI escape."""
    status = _status(_secret("a", "ok"), _secret("b", "deleted"))
    text = render(status, colour=False)
    assert not ANSI.search(text)
    assert exit_status(status) == EXIT_OK
    assert "0123456789abcdef" not in text and "01234567" in text  # version ids by their first 8 characters


@pytest.mark.parametrize("health", ["overdue", "failed", "stale"])
def test_exit_five_when_any_secret_needs_attention(health: str) -> None:
    """One overdue, failed or stale secret among ok ones makes the exit code 5."""
    assert exit_status(_status(_secret("a", "ok"), _secret("b", health))) == EXIT_UNHEALTHY == 5


def test_table_ordered_failed_and_overdue_first() -> None:
    """Rows go failed, overdue, stale, deleted, ok (then by name)."""
    status = _status(*(_secret(f"s-{h}", h) for h in ("ok", "stale", "deleted", "overdue", "failed")))
    rows = [line.split()[0] for line in render(status).splitlines() if line.startswith("s-")]
    assert rows == ["s-failed", "s-overdue", "s-stale", "s-deleted", "s-ok"]


def test_timeline_marks_rotations_over_spans() -> None:
    """The 24 h strip shows a stale span as ~ and a rotation as |, oldest on the left; older events are off it."""
    secret = _secret(
        "a",
        "stale",
        spans=[{"health": "stale", "start": "2026-11-30T06:00:00Z", "end": "2026-11-30T09:00:00Z"}],
        history=[
            {"version_id": "v2", "previous_version_id": "v1", "seen_at": "2026-11-30T07:00:00Z", "how": "poll"},
            {"version_id": "v1", "previous_version_id": None, "seen_at": "2026-11-20T07:00:00Z", "how": "history"},
        ],
    )
    cells = "".join(strip(secret, now=1796040000.0))  # 2026-11-30T12:00:00Z
    assert len(cells) == STRIP_WIDTH
    assert cells == "." * 36 + "~~" + "|" + "~~~~" + "." * 5  # 06:00-09:00 at 30 min a cell, 07:00 seen


def test_colour_on_request() -> None:
    """With colour the health word and the strip carry ANSI colours."""
    assert ANSI.search(render(_status(_secret("a", "failed")), colour=True))


def test_control_characters_from_the_agent_never_reach_the_terminal() -> None:
    """A version id, client or reason carrying escape sequences is printed with them neutralised, colour or not."""
    evil = "\x1b]0;x\x07\x1b[2J"
    secret = _secret(
        "a",
        "failed",
        version_id=evil + "0123456789",
        health_reason="AWSPENDING version " + evil,
        reads=[{"client": "c" + evil, "last_hour": 1, "last_day": 1, "denied": 0, "hourly": []}],
        old_version_readers=[{"client": "c" + evil, "version_id": evil, "reads": 1, "last_read": NOW}],
    )
    status = _status(secret)
    status["agent"].update(ready=False, ready_reason="prefetch " + evil)
    status["upstream"].update(healthy=False, failure_burst=1, last_error="Err" + evil)
    for colour in (False, True):
        text = render(status, colour=colour)
        assert "\x07" not in text and "\x1b]" not in text and "\x1b[2J" not in text


class _Client:
    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies

    def get(self, path: str) -> Any:
        assert path == "/status"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_watch_keeps_going_when_unreachable_and_stops_on_denied() -> None:
    """--watch redraws after an unreachable agent, and stops with the refusal when the token is denied."""
    out = io.StringIO()
    client = _Client([AgentUnreachable("connection refused"), ReadDenied("status: 403")])
    with pytest.raises(ReadDenied):
        show(client, watch=True, interval=0.01, out=out, sleep=lambda _s: None)  # type: ignore[arg-type]
    assert "connection refused" in out.getvalue()


def test_watch_returns_last_exit_code_on_ctrl_c() -> None:
    """Ctrl-C during --watch returns the exit code of the last status shown."""
    import json

    from agent.delivery.client import Reply

    body = json.dumps(_status(_secret("a", "overdue"))).encode()
    client = _Client([Reply(200, body, {})])

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    code = show(client, watch=True, interval=1, out=io.StringIO(), sleep=interrupt)  # type: ignore[arg-type]
    assert code == EXIT_UNHEALTHY
