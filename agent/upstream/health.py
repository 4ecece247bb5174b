"""Upstream health as ``/status`` reports it: the last success, the current failure burst, the last error."""

from __future__ import annotations

import time
from collections.abc import Callable


class UpstreamHealth:
    """Fed with every Secrets Manager call's outcome (see :class:`~agent.upstream.calls.UpstreamCalls`)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall = wall_clock
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None  # an error code (never a message: it may name a secret)
        self.failure_burst = 0  # transient failures since the last success

    @property
    def healthy(self) -> bool:
        """No transient failure since the last success."""
        return self.failure_burst == 0

    def note(self, outcome: str, transient: bool) -> None:
        """One call's outcome: ``ok``, or an error code (``transient``: throttling, 5xx, timeouts)."""
        if outcome == "ok":
            self.last_success = self._wall()
            self.failure_burst = 0
            return
        self.last_error = outcome
        if transient:
            self.last_failure = self._wall()
            self.failure_burst += 1
