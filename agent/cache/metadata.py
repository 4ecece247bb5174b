"""What DescribeSecret (or a ListSecrets pass) last said about each secret, and when.

The SDK route's DescribeSecret is how AWS's caching clients learn that a
secret rotated (they then read the new version by id), so its answer must be
as fresh as the agent promises reads to be: a view older than ``ttl_seconds``
is not served without asking upstream again (:meth:`SecretCache.describe`).
Views are kept whether or not the secret's value is cached, by name, ARN,
partial ARN and the id asked, bounded (least recently used first).
"""

from __future__ import annotations

from collections import OrderedDict

from agent.core.types import partial_arn
from agent.upstream.source import SecretMeta


class MetadataStore:
    """Bounded ``arn → (SecretMeta, confirmed at)`` with the ids each is known by."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._views: OrderedDict[str, tuple[SecretMeta, float]] = OrderedDict()
        self._ids: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._views)

    def arn_of(self, secret_id: str) -> str | None:
        """The ARN a name, ARN or partial ARN was last described as."""
        return self._ids.get(secret_id)

    def get(self, arn: str) -> tuple[SecretMeta, float] | None:
        """The view of ``arn`` and when upstream gave it, if held."""
        held = self._views.get(arn)
        if held is not None:
            self._views.move_to_end(arn)
        return held

    def put(self, meta: SecretMeta, confirmed_at: float, *, asked_as: str | None = None) -> None:
        """Keep ``meta`` as confirmed at ``confirmed_at``; evict the least recently used past the bound."""
        held = self._views.get(meta.arn)
        if held is not None and held[0] == meta:
            # Most passes say what the last one did: keep the objects already held, so a pass over
            # every secret leaves nothing new behind (less churn, a heap that does not fragment).
            meta = held[0]
        self._views[meta.arn] = (meta, confirmed_at)
        self._views.move_to_end(meta.arn)
        for alias in (meta.arn, meta.name, partial_arn(meta.arn), asked_as):
            if alias:
                self._ids[alias] = meta.arn
        while len(self._views) > self._max:
            gone, _ = self._views.popitem(last=False)
            for alias in [alias for alias, arn in self._ids.items() if arn == gone]:
                del self._ids[alias]
