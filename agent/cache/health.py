"""Rotation health: whether each cached secret's rotation is on schedule and its value current.

States, the first that applies winning:

``deleted``
    upstream says the secret is deleted (or scheduled for deletion).
``failed``
    a ``RotationFailed``/``RotationAbandoned`` event arrived and no new
    ``AWSCURRENT`` was seen since; or a version labelled ``AWSPENDING`` (and
    not ``AWSCURRENT``) is older than the grace period, counted from its
    CreatedDate, and no new ``AWSCURRENT`` was seen after it was created:
    the rotation started and never finished.
``overdue``
    rotation is enabled and ``NextRotationDate`` passed more than the grace
    period ago with no new ``AWSCURRENT`` since.
``stale``
    the agent serves the secret past an upstream failure: a read was answered
    from the cache because upstream failed, or (poll mode) no pass confirmed
    it for two intervals.
``ok``
    none of these.

Health is assessed from metadata the agent already holds (ListSecrets and
DescribeSecret carry the rotation fields), so watching it costs no calls of
its own. The :class:`HealthBook` keeps each secret's state and its recent
non-``ok`` spans (for the timeline), exports how many secrets are in each
state (``secrets_agent_secrets{health=...}``, no per-secret label: secrets
are unbounded, series must not be) and logs one warning per transition.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from agent.core.log import get_logger
from agent.upstream.source import SecretMeta

log = get_logger("agent.cache.health")

Health = Literal["ok", "overdue", "failed", "stale", "deleted"]
HEALTH_STATES: tuple[Health, ...] = ("ok", "overdue", "failed", "stale", "deleted")
# The status table's order: the states that need someone first.
SEVERITY: dict[str, int] = {"failed": 0, "overdue": 1, "stale": 2, "deleted": 3, "ok": 4}
SPANS_PER_SECRET = 50


@dataclass(frozen=True)
class Signals:
    """What is known about one secret when its health is assessed (times: wall-clock seconds)."""

    meta: SecretMeta | None
    last_changed: float | None  # the latest AWSCURRENT change seen (or upstream's LastRotatedDate)
    failed_event_at: float | None  # a RotationFailed/RotationAbandoned event not followed by a change
    pending_created: Mapping[str, float]  # AWSPENDING (not current) version → its CreatedDate
    stale: bool
    deleted: bool = False
    # The latest AWSCURRENT change in the history only: upstream's LastRotatedDate may move when a
    # rotation starts, so it never ends a lingering AWSPENDING failure.
    current_seen_at: float | None = None


def assess(signals: Signals, now: float, grace_seconds: float) -> tuple[Health, str]:
    """The secret's health and the reason, in words (no value, no token: names and dates only)."""
    meta = signals.meta
    if signals.deleted or (meta is not None and meta.deleted):
        return "deleted", "the secret is deleted or scheduled for deletion"
    if signals.failed_event_at is not None:
        return "failed", "a rotation failed or was abandoned and no new AWSCURRENT was seen since"
    for version, created in signals.pending_created.items():
        # A label left on an abandoned version: a newer AWSCURRENT seen since ends the failure, as for events.
        superseded = signals.current_seen_at is not None and signals.current_seen_at > created
        if now - created > grace_seconds and not superseded:
            return "failed", f"AWSPENDING version {version[:8]} has not become current within the grace period"
    if meta is not None and meta.rotation_enabled and meta.next_rotation is not None:
        due = meta.next_rotation
        rotated_since = signals.last_changed is not None and signals.last_changed >= due
        if now - due > grace_seconds and not rotated_since:
            return "overdue", "the scheduled rotation is past due by more than the grace period"
    if signals.stale:
        return "stale", "served from the cache past an upstream failure"
    return "ok", "ok"


@dataclass(frozen=True)
class Span:
    """A period a secret spent in a state other than ``ok``; ``end`` None while it lasts."""

    health: Health
    start: float
    end: float | None


class HealthBook:
    """Each secret's current health, recent non-``ok`` spans, the per-state gauge and transition log lines."""

    def __init__(self, set_count: Callable[[Health, int], None], *, spans_per_secret: int = SPANS_PER_SECRET) -> None:
        self._set_count = set_count
        self._spans_per_secret = spans_per_secret
        self._state: dict[str, Health] = {}
        self._reasons: dict[str, str] = {}
        self._spans: OrderedDict[str, deque[Span]] = OrderedDict()
        self.publish()  # every state's series exists from the start, at 0

    def health(self, arn: str) -> Health:
        """The last assessed state (``ok`` for a secret not assessed yet)."""
        return self._state.get(arn, "ok")

    def reason(self, arn: str) -> str:
        """Why the secret is in its state, in words."""
        return self._reasons.get(arn, "ok")

    def spans(self, arn: str) -> list[Span]:
        """Non-``ok`` spans, newest first."""
        return list(reversed(self._spans.get(arn, ())))

    def update(self, arn: str, name: str, health: Health, reason: str, now: float) -> None:
        """Record an assessment; a change of state closes the open span, opens one, and logs once."""
        previous = self._state.get(arn)
        self._state[arn] = health
        self._reasons[arn] = reason
        if previous == health or (previous is None and health == "ok"):
            return  # counts are published once per pass (:meth:`publish`)
        spans = self._spans.get(arn)
        if spans and spans[-1].end is None:
            spans[-1] = Span(spans[-1].health, spans[-1].start, now)
        if health != "ok":
            if spans is None:
                spans = self._spans[arn] = deque(maxlen=self._spans_per_secret)
            spans.append(Span(health, now, None))
        log.warning("secret_health", secret_id=name, arn=arn, health=health, previous=previous or "ok", reason=reason)

    def retain(self, arns: Iterable[str]) -> None:
        """Forget secrets no longer cached (their spans too), so counts cover cached secrets only."""
        keep = set(arns)
        gone = [arn for arn in self._state if arn not in keep]
        for arn in gone:
            del self._state[arn]
            self._reasons.pop(arn, None)
            self._spans.pop(arn, None)

    def publish(self) -> None:
        """Set the per-state gauge from the current states (after a pass over every secret)."""
        counts = dict.fromkeys(HEALTH_STATES, 0)
        for health in self._state.values():
            counts[health] += 1
        for health, count in counts.items():
            self._set_count(health, count)
