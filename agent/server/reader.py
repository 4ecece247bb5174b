"""Reads decided by policy: the one path every route (HTTP and SDK) takes to a secret.

A read is decided twice. First on every name the request can be known by,
before any upstream call, so a denied read costs nothing upstream and looks
the same whether or not the secret exists. Then, once the value (or metadata)
is in hand, on the secret's canonical name and ARN only, so a guessed partial
ARN can never widen an allow (see :mod:`agent.access.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.access.policy import Policy, canonical_ids, subject_ids
from agent.cache.store import FreshHit, Lookup, SecretCache
from agent.cache.usage import ReadUsage
from agent.core.errors import Forbidden
from agent.core.metrics import Metrics
from agent.core.types import Selector
from agent.server.regions import RegionalCaches
from agent.upstream.source import SecretMeta

ACCESS_DENIED = "access to this secret is denied"


class SecretReader:
    """Policy-checked reads through the cache, counted per client and decision."""

    def __init__(
        self,
        cache: SecretCache,
        policy: Policy,
        metrics: Metrics,
        *,
        caches: RegionalCaches | None = None,
        usage: ReadUsage | None = None,
    ) -> None:
        self._cache = cache
        self._usage = usage  # per secret and client, for /status
        # The agent's own caches: ``cache`` at home, and one per other region read by full ARN.
        self.caches = caches or RegionalCaches(cache)
        self._policy = policy
        self._metrics = metrics

    def _deny(self, client: str, arn: str | None = None) -> Forbidden:
        self._metrics.observe_read(client, "deny")
        if arn is not None and self._usage is not None:
            self._usage.note(arn, client, None, allowed=False)
        return Forbidden(ACCESS_DENIED)  # same body whether or not the secret exists

    def _cache_for(self, secret_id: str, caches: RegionalCaches | None) -> SecretCache:
        return (self.caches if caches is None else caches).for_id(secret_id)

    def _early(self, client: str, secret_id: str, caches: RegionalCaches | None) -> tuple[bool, str | None]:
        """The early decision, and the ARN ``secret_id`` is known to stand for (None: not known yet)."""
        if self._policy.unrestricted(client):
            return True, None
        # Decided before a cache is chosen: a denied read never makes the agent keep a region's cache.
        cache = (self.caches if caches is None else caches).peek_for_id(secret_id)
        arn = cache.resolve(secret_id) if cache is not None else None
        if cache is None or arn is None:
            return self._policy.allows(client, subject_ids(secret_id)), None
        ids = subject_ids(secret_id, arn=arn, name=cache.name_of(arn) if arn else None)
        return self._policy.allows(client, ids), arn

    def permits(self, client: str, secret_id: str, *, caches: RegionalCaches | None = None) -> bool:
        """Whether ``client`` may read ``secret_id`` (the early decision); no upstream call, nothing counted."""
        return self._early(client, secret_id, caches)[0]

    def check(self, client: str, secret_id: str, *, caches: RegionalCaches | None = None) -> None:
        """Raise Forbidden unless ``client`` may read ``secret_id``; decided without any upstream call."""
        allowed, arn = self._early(client, secret_id, caches)
        if not allowed:
            raise self._deny(client, arn)

    def may_read(self, client: str, *, arn: str, name: str) -> bool:
        """Whether ``client`` may read this secret (its own name and ARN); nothing counted (for listings)."""
        return self._policy.unrestricted(client) or self._policy.allows(client, canonical_ids(arn=arn, name=name))

    def check_canonical(self, client: str, *, arn: str, name: str) -> None:
        """The final decision, on the secret's own name and ARN (never on what the caller typed)."""
        if not self.may_read(client, arn=arn, name=name):
            raise self._deny(client, arn)

    def cached(self, client: str, secret_id: str, selector: Selector) -> tuple[SecretCache, FreshHit] | None:
        """A fresh cache hit ``client`` may read (and its cache), decided as :meth:`read` decides; else None.

        Nothing is counted or changed: the hot path calls :meth:`served` each
        time it answers with the value, and leaves every other case to
        :meth:`read`. The decision holds for as long as the cache's
        :meth:`~agent.cache.store.SecretCache.age_of` gives the hit an age:
        policies are fixed, and what they are decided on (the secret's ARN and
        name) lives in the entry the hit holds.
        """
        if not self.permits(client, secret_id):
            return None
        cache = self.caches.peek_for_id(secret_id)
        hit = cache.fresh(secret_id, selector) if cache is not None else None
        if hit is None or not self.may_read(client, arn=hit.arn, name=hit.value.name):
            return None
        assert cache is not None
        return cache, hit

    def served(self, client: str, cache: SecretCache, hit: FreshHit) -> None:
        """Count a read :meth:`cached` found and the hot path answered, as :meth:`read` counts it."""
        cache.count_hit(hit)
        self._metrics.observe_read(client, "allow")
        if self._usage is not None:
            self._usage.note(hit.arn, client, hit.entry.value.version_id, allowed=True)

    def _noted_allow(self, client: str, lookup: Lookup) -> None:
        self._metrics.observe_read(client, "allow")
        if self._usage is not None:
            self._usage.note(lookup.value.arn, client, lookup.value.version_id, allowed=True)

    async def read(
        self,
        client: str,
        secret_id: str,
        selector: Selector,
        *,
        refresh: bool = False,
        caches: RegionalCaches | None = None,
    ) -> Lookup:
        """Early policy check, the cache read (``caches``: a role's, else the agent's), then the canonical check."""
        self.check(client, secret_id, caches=caches)
        lookup = await self._cache_for(secret_id, caches).get(secret_id, selector, refresh=refresh)
        self.check_canonical(client, arn=lookup.value.arn, name=lookup.value.name)
        self._noted_allow(client, lookup)
        return lookup

    async def list_page(
        self, filters: Sequence[Mapping[str, Any]], max_results: int, next_token: str | None
    ) -> tuple[list[SecretMeta], str | None]:
        """Which secrets match ``filters`` (one page), asked upstream with the agent's credentials.

        The listing reveals names only (as ListSecrets would to the agent's
        identity); every value read from it is then decided per secret by
        :meth:`read`, so a denied secret is reported by name with
        AccessDeniedException and never with its value.
        """
        return await self._cache.list_page(filters, max_results, next_token)

    async def describe(self, client: str, secret_id: str) -> SecretMeta:
        """A secret's metadata, under the same two decisions as a read."""
        self.check(client, secret_id)
        meta = await self._cache_for(secret_id, None).describe(secret_id)
        self.check_canonical(client, arn=meta.arn, name=meta.name)
        return meta
