"""Rotations the agent observes, published to whoever cares (metrics, audit, log, templates).

The cache and the refresher publish a :class:`Rotation` when ``AWSCURRENT``
moves to a version they have installed; subscribers are plain callables,
called in subscription order on the event loop. A subscriber that raises is
logged and does not stop the others: a broken template must not hide a
rotation from the audit trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from agent.core.log import get_logger
from agent.core.types import SecretValue

log = get_logger("agent.rotations")

How = Literal["poll", "event", "read", "refreshNow"]


@dataclass(frozen=True)
class Rotation:
    """``AWSCURRENT`` moved: the value now served, the version it replaced, and how the agent learned."""

    value: SecretValue
    old_version: str | None
    how: How
    seen_at: float = field(default_factory=time.time)  # wall clock

    def delay_seconds(self) -> float | None:
        """How long after the new version's CreatedDate the agent saw it (None if upstream gave no date)."""
        created = self.value.created_date
        return max(0.0, self.seen_at - created) if created is not None else None


Subscriber = Callable[[Rotation], None]


class RotationFeed:
    """Fan-out of observed rotations."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` for every later rotation."""
        self._subscribers.append(subscriber)

    def publish(self, rotation: Rotation) -> None:
        """Tell every subscriber."""
        for subscriber in self._subscribers:
            try:
                subscriber(rotation)
            except Exception:  # one subscriber's bug must not hide the rotation from the rest
                log.exception("rotation_subscriber_failed", subscriber=getattr(subscriber, "__qualname__", "?"))
