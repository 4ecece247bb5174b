"""One identity's caches by region: a secret read by a full ARN in another region is cached apart.

A :class:`~agent.cache.store.SecretCache` maps a secret's name to its ARN, and a
name is unique only within a region: ``app/db`` in ``eu-west-1`` (a replica,
say) is not ``app/db`` at home. So a read by an ARN in another region goes
through that region's own cache (made on first use, at most
:data:`~agent.upstream.regions.MAX_REGIONS`, built like the home one over the
same source, which sends the call to that region), and a read by name is only
ever answered by the home region's cache. The refresher keeps only the home
cache fresh; the others are revalidated by their TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.cache.store import SecretCache
from agent.core.errors import BadRequest
from agent.upstream.regions import MAX_REGIONS, arn_region


class RegionalCaches:
    """The home region's cache, and one per other region asked for by full ARN."""

    def __init__(
        self,
        home: SecretCache,
        make: Callable[[], SecretCache] | None = None,
        *,
        home_region: str | None = None,
        max_regions: int = MAX_REGIONS,
    ) -> None:
        self.home = home
        self._make = make
        self._home_region = home_region
        self._max = max_regions
        self._others: dict[str, SecretCache] = {}

    @property
    def regions(self) -> list[str]:
        """Other regions with a cache of their own."""
        return list(self._others)

    def peek_for_id(self, secret_id: str) -> SecretCache | None:
        """The cache that would answer ``secret_id`` if it exists already; never makes one."""
        region = arn_region(secret_id)
        if region is None or region == self._home_region or self._make is None:
            return self.home
        return self._others.get(region)

    def for_id(self, secret_id: str) -> SecretCache:
        """The cache that answers for ``secret_id`` (a name or an ARN at home: the home cache)."""
        region = arn_region(secret_id)
        if region is None or region == self._home_region or self._make is None:
            return self.home
        cache = self._others.get(region)
        if cache is None:
            if len(self._others) >= self._max:
                raise BadRequest(f"secrets in more than {self._max} other regions are not read")
            cache = self._others[region] = self._make()
        return cache

    async def stop(self) -> None:
        """Shutdown: every cache stops (see :meth:`SecretCache.stop`)."""
        await asyncio.gather(self.home.stop(), *(cache.stop() for cache in self._others.values()))
