"""Health and metrics routes: ``/ping``, ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from agent.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.server.context import COMPONENTS, Components


async def ping(_request: web.Request) -> web.Response:
    """AWS-agent health check."""
    return web.Response(text="healthy")


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok")


async def readiness(parts: Components) -> tuple[bool, str]:
    """Prefetch and first template render done, no prefetched secret past the stale bound, audit healthy."""
    if not parts.started.is_set():
        return False, "prefetch in progress"
    ready, reason = await parts.refresher.ready()
    if ready and parts.templates is not None and not parts.templates.all_rendered:
        ready, reason = False, "a template has not rendered yet"
    audit_problem = parts.audit.problem
    if ready and audit_problem is not None:
        ready, reason = False, f"audit trail: {audit_problem}"
    return ready, reason


async def readyz(request: web.Request) -> web.Response:
    """Readiness (:func:`readiness`): 200, else 503 with the reason."""
    ready, reason = await readiness(request.app[COMPONENTS])
    return web.Response(status=200 if ready else 503, text=reason if ready else f"not ready: {reason}")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    parts = request.app[COMPONENTS]
    parts.metrics.cache_entries.set(len(parts.cache))
    response = web.Response(body=parts.metrics.render(await parts.cache.ages()))
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response
