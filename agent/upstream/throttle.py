"""Being a good upstream citizen: jittered backoff, and a hard attempt rate while throttled.

:class:`Backoff` is exponential backoff with *full jitter* (a delay drawn
uniformly from ``[0, min(cap, base * 2**failures)]``), which spreads a fleet's
retries instead of synchronising them.

:class:`AttemptPacer` hooks botocore's ``before-send`` and ``response-received``
events, so it sees every HTTP attempt, botocore's own retries included. Once a
throttling answer is seen it paces *all* attempts of the client until
``quiet_seconds`` pass without another throttle: from then on no one-second window holds more than ``max_rate``
attempts, the attempts already sent when throttling began included. The wait
happens in the worker thread that is about to send, never on the event loop.
Attempts already in flight when the first throttle arrives (at most the pool
size, 10) cannot be recalled.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.core.errors import UpstreamClosed

THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
)
MAX_ATTEMPTS_PER_SECOND_WHILE_THROTTLED = 5
THROTTLE_QUIET_SECONDS = 30.0
# Threads wake and send a few ms after their slot; the margin keeps the rate
# true as upstream observes it, not only as reserved here.
SEND_JITTER_GUARD = 0.05


class Backoff:
    """Exponential backoff with full jitter; ``reset()`` after a success."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next try."""
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """Forget past failures."""
        self.failures = 0


class AttemptPacer:
    """Caps a botocore client's HTTP attempts per second while upstream throttles."""

    def __init__(
        self,
        max_rate: int = MAX_ATTEMPTS_PER_SECOND_WHILE_THROTTLED,
        quiet_seconds: float = THROTTLE_QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_rate = int(max_rate)
        self.quiet_seconds = quiet_seconds
        self._recent: deque[float] = deque()  # attempt times (sent or reserved), last 2 s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._throttled_until = 0.0
        self._closed = False

    @property
    def throttled(self) -> bool:
        """True while attempts are being paced."""
        return self._clock() < self._throttled_until

    def install(self, client: Any) -> None:
        """Register on every operation of ``client``."""
        events = client.meta.events
        events.register("before-send", self._before_send)
        events.register("response-received", self._response_received)

    def close(self) -> None:
        """Refuse every later attempt (botocore retries of calls still running included)."""
        self._closed = True

    def _before_send(self, **_kwargs: Any) -> None:
        # Returning None lets botocore send the request itself.
        if self._closed:
            raise UpstreamClosed("the agent is shutting down")
        with self._lock:
            now = self._clock()
            recent = self._recent
            while recent and recent[0] <= now - 2.0:
                recent.popleft()
            slot = now
            if now < self._throttled_until:
                # Sliding window: this attempt goes no earlier than one second after
                # the max_rate-th latest one, so any second holds at most max_rate
                # attempts, counting those already sent when throttling began.
                if len(recent) >= self.max_rate:
                    slot = max(slot, recent[-self.max_rate] + 1.0 + SEND_JITTER_GUARD)
                if recent:
                    slot = max(slot, recent[-1])
            recent.append(slot)
        wait = slot - now
        if wait > 0:
            self._sleep(wait)

    def _response_received(self, parsed_response: Any = None, **_kwargs: Any) -> None:
        if not isinstance(parsed_response, dict):
            return
        error = parsed_response.get("Error") or {}
        status = (parsed_response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if error.get("Code") in THROTTLE_CODES or status == 429:
            self.note_throttle()

    def note_throttle(self) -> None:
        """Enter (or extend) the paced state."""
        with self._lock:
            self._throttled_until = self._clock() + self.quiet_seconds
