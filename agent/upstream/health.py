"""Upstream health: the last success, the current failure burst, the last error.

:class:`UpstreamHealth` is the one place that decides when a failure burst
(transient failures with no success between them) starts and ends. ``/status``
reads its state; whoever else cares about bursts (the audit trail writes one
record when a burst starts and one when it ends) is told of both transitions
through ``on_burst``, with the :class:`FailureBurst` itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class FailureBurst:
    """A run of transient upstream failures with no success between them."""

    operation: str  # the API whose failure started it
    first_error: str  # that failure's error code
    started: float  # monotonic seconds
    failures: int = 1
    ended: float | None = None  # monotonic seconds: set when a success ended it

    @property
    def seconds(self) -> float | None:
        """How long the burst lasted (None while it goes on)."""
        return None if self.ended is None else self.ended - self.started


# Told when a burst starts (``ended`` None) and when it ends.
BurstListener = Callable[[FailureBurst], None]


class UpstreamHealth:
    """Fed with every Secrets Manager call's outcome (see :class:`~agent.upstream.calls.UpstreamCalls`)."""

    def __init__(
        self,
        wall_clock: Callable[[], float] = time.time,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_burst: BurstListener | None = None,
    ) -> None:
        self._wall = wall_clock
        self._clock = clock
        self._on_burst = on_burst
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None  # an error code (never a message: it may name a secret)
        self.burst: FailureBurst | None = None  # the failure burst going on, if any

    @property
    def failure_burst(self) -> int:
        """Transient failures since the last success."""
        return self.burst.failures if self.burst is not None else 0

    @property
    def healthy(self) -> bool:
        """No transient failure since the last success."""
        return self.burst is None

    def note(self, operation: str, outcome: str, transient: bool) -> None:
        """One call's outcome: ``ok``, or an error code (``transient``: throttling, 5xx, timeouts).

        A transient failure with no burst going on starts one; a success ends it.
        Other errors (a refusal, a missing secret) neither start nor end a burst.
        """
        if outcome == "ok":
            self.last_success = self._wall()
            if self.burst is not None:
                ended, self.burst = replace(self.burst, ended=self._clock()), None
                self._tell(ended)
            return
        self.last_error = outcome
        if not transient:
            return
        self.last_failure = self._wall()
        if self.burst is None:
            self.burst = FailureBurst(operation, outcome, started=self._clock())
            self._tell(self.burst)
        else:
            self.burst = replace(self.burst, failures=self.burst.failures + 1)

    def _tell(self, burst: FailureBurst) -> None:
        if self._on_burst is not None:
            self._on_burst(burst)
