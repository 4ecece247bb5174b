"""Counting open connections across both listeners, and marking those opened over the limit."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class ConnectionLimiter:
    """Counts open connections; marks those opened while ``max_connections`` were already open.

    aiohttp exposes no connection hook, so :meth:`install` wraps the server's
    ``connection_made``/``connection_lost`` on the instance; both stay O(1).
    The guard middleware refuses requests on a marked connection (429) and
    closes it.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0
        self._over: set[Any] = set()

    def install(self, server: web.Server) -> None:
        """Start counting connections of ``server`` (call once, before sites start)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            if self.open >= self.max_connections:
                self._over.add(handler)
            self.open += 1
            made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.open -= 1
            self._over.discard(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def over_limit(self, request: web.Request) -> bool:
        """True when the request's connection was opened past the limit."""
        return bool(self._over) and request.protocol in self._over
