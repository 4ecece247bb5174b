"""Request accounting shared by both paths: metrics, and a log that does not flood.

A sidecar answering thousands of reads a second must not write thousands of
lines a second. So a request is *routine* when it succeeded (status below 400)
without going upstream (a cache ``hit`` or ``revalidating``, or no cache at
all: health, metrics): a routine request is logged at debug and counted, and
every ``[log] summary_interval_seconds`` one info line ``requests_summary``
gives the counts by route, status and client. Everything else (errors,
denials, refusals, reads that went upstream: ``miss``, ``refresh``,
``revalidated``, ``stale``) is logged at info at once, one line per request,
as is every request when the interval is 0.

A caller hammering the agent with bad requests (a wrong token in a loop, a
scanner) must not flood the log either: within one summary interval at most
``[log] request_lines_per_interval`` lines are written at once for each
route, status and client; past that one ``request_lines_suppressed`` warning
says so, and the rest are counted into the summary line (``suppressed``).

The audit trail is not affected: it keeps one record per read. The aiohttp
middleware (:mod:`agent.server.middleware`) and the hot path
(:mod:`agent.server.fastpath`) both build the line with :func:`request_fields`
and hand it to :meth:`RequestLog.record`, so both feed the same counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from agent.core.log import get_logger
from agent.core.metrics import Metrics

log = get_logger("agent.access_log")

# Cache outcomes of a read that did not wait on upstream.
QUIET_OUTCOMES = frozenset({None, "hit", "revalidating"})


def request_fields(
    *,
    method: str,
    route: str,
    status: int,
    elapsed: float,
    listener: str,
    client: str,
    request_id: str,
    secret_id: str | None = None,
    role_arn: str | None = None,
    cache: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The fields of a request's log line (never a value or a token)."""
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": round(elapsed * 1000, 3),
        "listener": listener,
        "client": client,
        "request_id": request_id,
    }
    if secret_id is not None:
        fields["secret_id"] = secret_id
    if role_arn is not None:
        fields["role_arn"] = role_arn
    if cache is not None:
        fields["cache"] = cache
    if error is not None:
        fields["error"] = error
    return fields


class RequestLog:
    """Counts every answered request in metrics; logs it now or counts it into the next summary line."""

    def __init__(
        self, metrics: Metrics, *, summary_interval_seconds: float = 0.0, request_lines_per_interval: int = 0
    ) -> None:
        self._metrics = metrics
        self.summary_interval_seconds = summary_interval_seconds
        # 0 (or no summaries): every line that is not routine is written.
        self._max_lines = request_lines_per_interval if summary_interval_seconds > 0 else 0
        self._counts: Counter[tuple[str, int, str]] = Counter()
        self._lines: Counter[tuple[str, int, str]] = Counter()  # lines written at once this interval
        self._suppressed = 0
        # The level is set once, at start: skip building a debug line nobody will see.
        self._debug = bool(log.is_enabled_for(logging.DEBUG))

    def record(self, fields: dict[str, Any], elapsed: float) -> None:
        """Account for one answered request whose line is ``fields`` (see :func:`request_fields`)."""
        route, status = fields["route"], fields["status"]
        self._metrics.observe_request(route, status, elapsed)
        routine = status < 400 and "error" not in fields and fields.get("cache") in QUIET_OUTCOMES
        if routine and self.summary_interval_seconds > 0:
            self._counts[(route, status, fields["client"])] += 1
            if self._debug:
                log.debug("request", **fields)
        elif not self.may_write(route, status, fields["client"]):
            if self._debug:
                log.debug("request", **fields)
        else:
            log.info("request", **fields)

    def may_write(self, route: str, status: int, client: str) -> bool:
        """Count a line about to be written at once; False past the interval's cap (counted for the summary)."""
        if not self._max_lines:
            return True
        key = (route, status, client)
        written = self._lines[key] = self._lines[key] + 1
        if written <= self._max_lines:
            return True
        if written == self._max_lines + 1:
            log.warning(
                "request_lines_suppressed",
                route=route,
                status=status,
                client=client,
                limit=self._max_lines,
                interval_seconds=self.summary_interval_seconds,
            )
        self._counts[key] += 1
        self._suppressed += 1
        return False

    def routine(self, route: str, client: str, elapsed: float) -> bool:
        """Account for a routine 200 (no error, no upstream) as :meth:`record` would, if that writes no line.

        The hot path's shortcut: it answers only such requests, and most of the
        time no line is written for them, so their fields need not be built.
        False (a line would be written: debug, or no summaries): nothing was
        done, call :meth:`record`.
        """
        if self.summary_interval_seconds <= 0 or self._debug:
            return False
        self._metrics.observe_request(route, 200, elapsed)
        self._counts[(route, 200, client)] += 1
        return True

    def flush(self) -> None:
        """Write the summary line for the requests counted since the last one (none: no line); a new interval starts."""
        self._lines.clear()
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        suppressed, self._suppressed = self._suppressed, 0
        log.info(
            "requests_summary",
            interval_seconds=self.summary_interval_seconds,
            total=sum(counts.values()),
            suppressed=suppressed,
            counts=[
                {"route": route, "status": status, "client": client, "count": count}
                for (route, status, client), count in sorted(counts.items())
            ],
        )

    async def run(self) -> None:
        """Write a summary line every interval until cancelled, then one for what is left."""
        if self.summary_interval_seconds <= 0:
            return
        try:
            while True:
                await asyncio.sleep(self.summary_interval_seconds)
                self.flush()
        finally:
            self.flush()
