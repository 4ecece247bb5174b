"""Rotation history: every ``AWSCURRENT`` change the agent saw, per secret, newest first, bounded.

Three sources feed it, in the order an agent meets them:

1. the audit file, when ``[audit] path`` is set: rotation records written by
   earlier runs are restored with the ``how`` and ``seen_at`` they were
   recorded with (:meth:`RotationHistory.restore`);
2. upstream, once per prefetched secret (ListSecretVersionIds): versions the
   agent never saw change are added with their CreatedDate as ``seen_at`` and
   ``how = "history"`` (:meth:`RotationHistory.seed`);
3. the agent itself: every :class:`~agent.cache.rotations.Rotation` it
   publishes, with the detection delay (seen - the new version's CreatedDate).

The same change learnt twice is kept once: an account the agent observed
(now or in an earlier run) replaces one inferred from upstream's versions
for the same version, never the reverse, since it says how and when the
change was really seen. A version becoming current again (a rollback) is a
change of its own.

Times are wall-clock seconds (``time.time``): they are shown to people.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.cache.rotations import Rotation
from agent.core.types import AWSCURRENT, AWSPREVIOUS
from agent.upstream.source import VersionInfo

# Changes kept per secret, and secrets kept: bounded whatever the agent runs for.
DEFAULT_PER_SECRET = 50
DEFAULT_MAX_SECRETS = 10_000
# superseded_at answers remembered (readers of that many versions at once before it starts over).
SUPERSEDED_MEMO = 10_000
INFERRED = "history"  # the ``how`` of a change inferred from ListSecretVersionIds


@dataclass(frozen=True, slots=True)  # slots: thousands are kept (one per cached secret at least)
class Change:
    """One observed change of ``AWSCURRENT``."""

    version_id: str
    previous_version_id: str | None
    seen_at: float
    how: str  # poll, event, read, refreshNow, or history (seeded from upstream)
    delay_seconds: float | None  # seen_at - the new version's CreatedDate, when known


class RotationHistory:
    """Per-secret bounded history of ``AWSCURRENT`` changes (by canonical ARN)."""

    def __init__(
        self,
        *,
        per_secret: int = DEFAULT_PER_SECRET,
        max_secrets: int = DEFAULT_MAX_SECRETS,
    ) -> None:
        self._per_secret = per_secret
        self._max_secrets = max_secrets
        # Lists, not bounded deques: a deque allocates a 64-slot block even for the one change most secrets have.
        self._changes: OrderedDict[str, list[Change]] = OrderedDict()
        # superseded_at answers, asked on every read: (ARN, version id) → answer, dropped on any change.
        self._superseded: dict[tuple[str, str], float | None] = {}

    def __contains__(self, arn: str) -> bool:
        return arn in self._changes

    def changes(self, arn: str) -> list[Change]:
        """The secret's changes, newest first."""
        return sorted(self._changes.get(arn, ()), key=lambda change: change.seen_at, reverse=True)

    def last_changed(self, arn: str) -> float | None:
        """When ``AWSCURRENT`` last moved, as far as the history knows."""
        changes = self._changes.get(arn)
        return max((change.seen_at for change in changes), default=None) if changes else None

    def superseded_at(self, arn: str, version_id: str) -> float | None:
        """When ``version_id`` last stopped being current; None if never replaced or current again (a rollback)."""
        key = (arn, version_id)
        try:
            return self._superseded[key]
        except KeyError:
            pass
        if len(self._superseded) >= SUPERSEDED_MEMO:
            self._superseded.clear()
        answer = self._superseded[key] = self._superseded_now(arn, version_id)
        return answer

    def _superseded_now(self, arn: str, version_id: str) -> float | None:
        changes = self._changes.get(arn)
        if not changes:  # asked on every read: most secrets have no recorded change
            return None
        replaced = max((c.seen_at for c in changes if c.previous_version_id == version_id), default=None)
        if replaced is None:
            return None  # the usual answer on every read of the current version: one pass over the history
        became = max((c.seen_at for c in changes if c.version_id == version_id), default=None)
        return None if became is not None and became > replaced else replaced

    def _successor(self, arn: str, version_id: str) -> Change | None:
        """The known change that replaced ``version_id``, if any."""
        return next((c for c in self._changes.get(arn, ()) if c.previous_version_id == version_id), None)

    def add(self, arn: str, change: Change) -> bool:
        """Record ``change``; an observed one replaces an inferred one for the same version, else the first stays.

        Observed changes to a version seen before are kept (a rollback, then a roll forward again),
        unless the newest change already says the same (one change reported twice).
        """
        changes = self._changes.get(arn)
        self._superseded.clear()  # whatever follows may answer superseded_at differently
        if changes is None:
            changes = self._changes[arn] = []
            while len(self._changes) > self._max_secrets:
                self._changes.popitem(last=False)
        if change.how == INFERRED:
            if any(known.version_id == change.version_id for known in changes):
                return False
        else:
            inferred = next((k for k in changes if k.version_id == change.version_id and k.how == INFERRED), None)
            latest = max(changes, key=lambda known: known.seen_at, default=None)
            if inferred is not None:
                changes.remove(inferred)
            elif latest is not None and (latest.version_id, latest.previous_version_id) == (
                change.version_id,
                change.previous_version_id,
            ):
                return False
        if len(changes) >= self._per_secret:
            # Keep the newest: drop the oldest by seen_at, whatever order they arrived in.
            oldest = min(changes, key=lambda known: known.seen_at)
            if oldest.seen_at > change.seen_at:
                return False
            changes.remove(oldest)
        changes.append(change)
        self._changes.move_to_end(arn)
        return True

    def observe(self, rotation: Rotation) -> Change:
        """A :class:`Rotation` the agent published: recorded with its detection delay."""
        value = rotation.value
        delay = rotation.delay_seconds()
        change = Change(value.version_id, rotation.old_version, rotation.seen_at, rotation.how, delay)
        self.add(value.arn, change)
        return change

    def restore(self, arn: str, change: Change) -> None:
        """A change recorded by an earlier run (from the audit file)."""
        self.add(arn, change)

    def seed(self, arn: str, versions: Iterable[VersionInfo]) -> int:
        """Changes inferred from ListSecretVersionIds; returns how many were new.

        Versions are ordered by CreatedDate; each that is (or was, being
        ``AWSPREVIOUS`` or older and not merely pending) a current version
        counts as one change from the one before it, seen at its CreatedDate.
        """
        dated = sorted(
            (version for version in versions if version.created is not None and _was_current(version)),
            # CreatedDate may tie (whole seconds): the previous version goes before the current one.
            key=lambda version: (version.created or 0.0, AWSCURRENT in version.stages),
        )
        added = 0
        previous: str | None = None
        for version in dated:
            assert version.created is not None  # filtered above
            seen = version.created
            successor = self._successor(arn, version.version_id)
            if successor is not None:
                # A version was current before its successor was seen, whatever date upstream reports
                # (an emulator may report the time of the call).
                seen = min(seen, successor.seen_at)
            change = Change(version.version_id, previous, seen, INFERRED, None)
            added += self.add(arn, change)
            previous = version.version_id
        return added


def _was_current(version: VersionInfo) -> bool:
    """A version that is or was current: AWSCURRENT, AWSPREVIOUS, or unlabelled (deprecated ones are older)."""
    stages = set(version.stages)
    return AWSCURRENT in stages or AWSPREVIOUS in stages or not stages
