"""``secrets-agent status [--watch]``: the ``/status`` table in a terminal.

One line about the agent (version, uptime, readiness, upstream, cache), then a
table ordered by health (failed and overdue first, as on ``/ui``), each secret
followed by a one-line timeline of the last 24 hours: one character per
:data:`STRIP_WIDTH`-th of the day, ``.`` ok, ``~`` stale, ``!`` failed, ``>``
overdue, ``x`` deleted, and ``|`` where a new AWSCURRENT was seen.

Colour (ANSI) only when the output is a terminal, which ``--watch`` then
redraws in place; plain text otherwise, so scripts can parse or diff it. The exit code says
whether anything needs attention: 0 when every secret is ``ok`` (or
``deleted``: nothing left to fix), :data:`~agent.cli.exit_codes.EXIT_UNHEALTHY`
when any is overdue, failed or stale.

Rendering is pure (the ``/status`` JSON and a flag in, text out); fetching goes
through :class:`~agent.delivery.client.AgentClient` like ``get`` and ``wait``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from agent.cache.health import SEVERITY
from agent.cli.exit_codes import EXIT_OK, EXIT_UNHEALTHY
from agent.core.errors import ReadDenied, ReadFailed
from agent.core.types import parse_rfc3339
from agent.delivery.client import AgentClient

UNHEALTHY = frozenset({"overdue", "failed", "stale"})
STRIP_WIDTH = 48  # half an hour per character over 24 hours
STRIP_SECONDS = 24 * 3600.0
SPAN_CHARS = {"stale": "~", "failed": "!", "overdue": ">", "deleted": "x"}
ROTATION_CHAR = "|"
LEGEND = ". ok  ~ stale  ! failed  > overdue  x deleted  | new version seen"

_RESET = "\x1b[0m"
_COLOURS = {
    "ok": "\x1b[32m",
    "stale": "\x1b[33m",
    "failed": "\x1b[31;1m",
    "overdue": "\x1b[35m",
    "deleted": "\x1b[2m",
    "rotation": "\x1b[36;1m",
    "dim": "\x1b[2m",
}
_CLEAR = "\x1b[H\x1b[2J"


def _clean(value: Any) -> str:
    """``value`` as text with control characters replaced: what the agent reports must not drive the terminal."""
    return "".join(char if char.isprintable() else "?" for char in str(value))


def exit_status(status: dict[str, Any]) -> int:
    """0 when no secret is overdue, failed or stale; :data:`EXIT_UNHEALTHY` otherwise."""
    return EXIT_UNHEALTHY if any(s.get("health") in UNHEALTHY for s in status.get("secrets", [])) else EXIT_OK


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return parse_rfc3339(value)


def duration(seconds: float | None) -> str:
    """``4.2s``, ``37s``, ``12m``, ``5h``, ``3d``; ``-`` for none."""
    if seconds is None:
        return "-"
    size = abs(seconds)
    if size < 10:
        return f"{seconds:.1f}s"
    if size < 120:
        return f"{seconds:.0f}s"
    if size < 7200:
        return f"{seconds / 60:.0f}m"
    if size < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _ago(now: float, value: str | None) -> str:
    moment = _time(value)
    if moment is None:
        return "-"
    return "just now" if now - moment < 1 else f"{duration(now - moment)} ago"


def _rotation(rotation: dict[str, Any] | None, now: float) -> str:
    rotation = rotation or {}
    enabled = rotation.get("enabled")
    if enabled is None:
        return "-"  # not described yet
    if not enabled:
        return "off"
    upcoming = _time(rotation.get("next"))
    if upcoming is None:
        return "on"
    return f"next in {duration(upcoming - now)}" if upcoming >= now else f"due {duration(now - upcoming)} ago"


def strip(secret: dict[str, Any], now: float, width: int = STRIP_WIDTH) -> list[str]:
    """The last 24 hours of ``secret`` as ``width`` characters (oldest first), rotations over spans."""
    cells = ["."] * width
    start = now - STRIP_SECONDS

    def cell(moment: float) -> int:
        return min(width - 1, max(0, int((moment - start) / STRIP_SECONDS * width)))

    for span in secret.get("spans") or []:
        begin, end = _time(span.get("start")), _time(span.get("end")) or now
        char = SPAN_CHARS.get(span.get("health", ""))
        if begin is None or char is None or end < start:
            continue
        for index in range(cell(begin), cell(end) + 1):
            cells[index] = char
    for entry in secret.get("history") or []:
        seen = _time(entry.get("seen_at"))
        if seen is not None and start <= seen <= now:
            cells[cell(seen)] = ROTATION_CHAR
    return cells


def _paint(text: str, colour: str | None, enabled: bool) -> str:
    return f"{_COLOURS[colour]}{text}{_RESET}" if enabled and colour else text


def _strip_text(cells: list[str], colour: bool) -> str:
    if not colour:
        return "".join(cells)
    kinds = {char: kind for kind, char in SPAN_CHARS.items()} | {ROTATION_CHAR: "rotation", ".": "dim"}
    runs = "".join(cells)
    out, start = [], 0
    for index in range(1, len(runs) + 1):  # one escape sequence per run of equal characters
        if index == len(runs) or runs[index] != runs[start]:
            out.append(_paint(runs[start:index], kinds.get(runs[start]), True))
            start = index
    return "".join(out)


def _reads(secret: dict[str, Any]) -> str:
    reads = secret.get("reads") or []
    hour = sum(int(r.get("last_hour", 0)) for r in reads)
    day = sum(int(r.get("last_day", 0)) for r in reads)
    denied = sum(int(r.get("denied", 0)) for r in reads)
    return f"{hour}/{day}" + (f" ({denied} denied)" if denied else "")


def _old_readers(secret: dict[str, Any]) -> str:
    readers = secret.get("old_version_readers") or []
    return ", ".join(f"{_clean(r['client'])}@{_clean(str(r['version_id'])[:8])}" for r in readers) or "-"


def _header(status: dict[str, Any], now: float, colour: bool) -> str:
    agent, upstream, cache = status.get("agent", {}), status.get("upstream", {}), status.get("cache", {})
    ratio = cache.get("hit_ratio")
    not_ready = f"not ready ({_clean(agent.get('ready_reason') or '?')})"
    parts = [
        f"secrets-agent {_clean(agent.get('version', '?'))}",
        f"up {duration(agent.get('uptime_seconds'))}",
        "ready" if agent.get("ready") else _paint(not_ready, "failed", colour),
    ]
    if upstream.get("healthy"):
        parts.append(f"upstream ok (last success {_ago(now, upstream.get('last_success'))})")
    else:
        error = f": {_clean(upstream['last_error'])}" if upstream.get("last_error") else ""
        parts.append(_paint(f"upstream failing ({upstream.get('failure_burst', 0)} in a row{error})", "failed", colour))
    ratio_text = "-" if ratio is None else f"{ratio * 100:.1f}%"
    parts.append(f"cache {cache.get('secrets', 0)} secrets, {cache.get('entries', 0)} entries, hit ratio {ratio_text}")
    return " | ".join(parts)


def render(status: dict[str, Any], *, colour: bool = False) -> str:
    """The whole screen for one ``/status`` answer: header, table with timelines, legend."""
    now = _time(status.get("agent", {}).get("now")) or time.time()
    secrets = sorted(
        status.get("secrets", []), key=lambda s: (SEVERITY.get(s.get("health"), len(SEVERITY)), s.get("name"))
    )
    titles = ("SECRET", "HEALTH", "VERSION", "CHANGED", "ROTATION", "STALE", "READS 1H/24H", "OLD VERSION READERS")
    rows = [
        (
            _clean(s.get("name")),
            _clean(s.get("health")),
            _clean(str(s.get("version_id") or "-")[:8]),
            _ago(now, s.get("last_changed")),
            _rotation(s.get("rotation"), now),
            duration(s.get("staleness_seconds")),
            _reads(s),
            _old_readers(s),
        )
        for s in secrets
    ]
    widths = [max(len(row[i]) for row in (titles, *rows)) for i in range(len(titles))]

    def line(values: tuple[str, ...], health: str | None = None) -> str:
        cells = [value.ljust(width) for value, width in zip(values, widths, strict=True)]
        if health is not None:
            cells[1] = _paint(cells[1], health if health in _COLOURS else None, colour)
        return "  ".join(cells).rstrip()

    out = [_header(status, now, colour), "", line(titles)]
    for secret, row in zip(secrets, rows, strict=True):
        out.append(line(row, row[1]))
        out.append(f"  24h [{_strip_text(strip(secret, now), colour)}] now")
        reason = secret.get("health_reason")
        if secret.get("health") != "ok" and reason:
            out.append(f"  why: {_clean(reason)}")
    if not secrets:
        out.append("(no cached secrets this client may read)")
    out += ["", _paint(f"timeline: {LEGEND}", "dim", colour)]
    return "\n".join(out) + "\n"


def fetch(client: AgentClient) -> dict[str, Any]:
    """``GET /status`` through ``client``; the agent's errors as :class:`ReadFailed` and its subclasses."""
    reply = client.get("/status")
    reply.raise_for_status("status")
    data: dict[str, Any] = json.loads(reply.body)
    return data


def show(
    client: AgentClient,
    *,
    watch: bool,
    interval: float,
    out: TextIO = sys.stdout,
    colour: bool = False,
    clear: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the status once (its exit code) or, with ``watch``, redraw every ``interval`` until Ctrl-C.

    ``clear``: wipe the terminal before each redraw (a TTY); else screens follow one another.
    Watching returns the exit code of the last status shown.
    """
    if not watch:
        status = fetch(client)
        out.write(render(status, colour=colour))
        return exit_status(status)
    code = EXIT_OK
    try:
        while True:
            try:
                status = fetch(client)
                screen, code = render(status, colour=colour), exit_status(status)
            except ReadDenied:
                raise  # a refused token will not be accepted on the next try
            except ReadFailed as exc:  # unreachable or failing: keep watching, the agent may come back
                screen = f"secrets-agent status: {exc} (retrying every {interval:g}s)\n"
            out.write((_CLEAR if clear else "\n") + screen)
            out.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return code
