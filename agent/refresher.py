"""Prefetch: load the configured secrets before the agent calls itself ready.

Explicit ids go straight to BatchGetSecretValue (20 per call). Name prefixes
and tags are resolved with ListSecrets first (its entries carry tags, so a
``key=value`` tag is matched exactly, which BatchGetSecretValue's separate
``tag-key``/``tag-value`` filters cannot do), then fetched by ARN the same way.
A secret is prefetched if it is listed, or matches any prefix, or any tag.

A failure for one id is logged by name and does not stop the rest; readiness
means "prefetch ran to the end", not "every id was found".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agent.cache import SecretCache
from agent.config import PrefetchSettings
from agent.errors import UpstreamError
from agent.log import get_logger
from agent.source import SecretMeta, SecretSource
from agent.types import CURRENT

log = get_logger("agent.refresher")


def matches(meta: SecretMeta, prefixes: Sequence[str], tags: Sequence[tuple[str, str | None]]) -> bool:
    """True when the secret's name has one of the prefixes or it carries one of the tags."""
    if any(meta.name.startswith(prefix) for prefix in prefixes):
        return True
    return any(key in meta.tags and (value is None or meta.tags[key] == value) for key, value in tags)


class Refresher:
    """Owns prefetch (and, in later work, background freshness)."""

    def __init__(self, source: SecretSource, cache: SecretCache, settings: PrefetchSettings) -> None:
        self._source = source
        self._cache = cache
        self._settings = settings
        self.prefetched = asyncio.Event()
        self.failed: dict[str, str] = {}

    async def prefetch(self) -> None:
        """Fetch every configured secret once; set :attr:`prefetched` when done."""
        try:
            ids = list(dict.fromkeys(self._settings.secrets))
            if self._settings.name_prefixes or self._settings.tags:
                ids.extend(await self._resolve_filters())
            ids = list(dict.fromkeys(ids))
            if ids:
                result = await self._source.batch_get(ids)
                for value in result.values:
                    await self._cache.put(value, CURRENT)
                for secret_id, error in result.errors.items():
                    self.failed[secret_id] = error.code
                    log.warning("prefetch_failed", secret_id=secret_id, error=error.code, reason=error.message)
                log.info("prefetch_done", requested=len(ids), cached=len(result.values), failed=len(result.errors))
            else:
                log.info("prefetch_done", requested=0, cached=0, failed=0)
        finally:
            self.prefetched.set()

    async def _resolve_filters(self) -> list[str]:
        prefixes = self._settings.name_prefixes
        tags = self._settings.tags
        try:
            metas = await self._source.list_secrets(prefixes, [key for key, _ in tags])
        except UpstreamError as exc:
            log.warning("prefetch_list_failed", error=exc.code, reason=exc.message)
            return []
        return [meta.arn for meta in metas if matches(meta, prefixes, tags)]
