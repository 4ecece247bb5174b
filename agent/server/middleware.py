"""Request pipeline: observe (id, timing, errors, log line, metrics) then guard.

Guard order follows AWS's agent, so clients see the same refusals:

1. connection limit  → 429 (connection opened while ``max_connections`` were open)
2. ``X-Forwarded-For`` → 400 (the request came through a proxy: possible SSRF)
3. token              → 403 (missing and wrong look the same)
4. method not GET     → 405
5. unknown path       → 404 (raised by routing, rendered here)

``/ping``, ``/healthz`` and ``/readyz`` skip step 3 (and ``/metrics`` when
configured public); they reveal nothing about secrets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from agent.access.audit import AuditLog
from agent.access.identity import Authenticator, Peer, RateLimiter, peer_credentials
from agent.core.errors import (
    AgentError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    TooManyConnections,
    TooManyRequests,
)
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.server.sdk import is_sdk_request

log = get_logger("agent.access_log")

CLIENT_KEY = web.RequestKey("client", str)
SECRET_ID_KEY = web.RequestKey("secret_id", str)
CACHE_KEY = web.RequestKey("cache", str)
PEER_KEY = web.RequestKey("peer", Peer)
DECISION_KEY = web.RequestKey("decision", str)
# One dict per secret read (name, arn, version_id, version_stage; for batches also decision/status).
SERVED_KEY = web.RequestKey("served", list)
READ_ROUTES = frozenset({"get", "v1", "value", "sdk"})
ALWAYS_PUBLIC = frozenset({"/ping", "/healthz", "/readyz"})
MAX_REQUEST_ID = 64


class ConnectionLimiter:
    """Counts open connections across both listeners; marks those opened over the limit.

    aiohttp exposes no connection hook, so :meth:`install` wraps the server's
    ``connection_made``/``connection_lost`` on the instance; both stay O(1).
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


def error_response(error: AgentError, *, close: bool = False) -> web.Response:
    """The AWS-style error body ``{"__type": code, "message": text}``."""
    body = json.dumps({"__type": error.code, "message": error.message}).encode()
    response = web.Response(status=error.status, body=body, content_type="application/json")
    if close:
        response.force_close()  # sends Connection: close and drops the connection after
    return response


def _from_http_exception(exc: web.HTTPException) -> AgentError:
    if exc.status == 404:
        return NotFound("not found")
    if exc.status == 405:
        return MethodNotAllowed("only GET is allowed")
    error = AgentError(exc.reason)
    error.status = exc.status
    error.code = "InvalidRequestException" if exc.status < 500 else "InternalFailure"
    return error


def _listener(request: web.Request) -> str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport else None
    return "unix" if isinstance(sockname, str | bytes) else "tcp"


def _client_request_id(request: web.Request) -> str | None:
    # A caller's X-Request-Id is echoed and logged only if short and plain,
    # so it cannot be used to forge or flood log lines.
    given = request.headers.get("X-Request-Id")
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return None


def _request_ids() -> Iterator[str]:
    # A random per-process prefix and a counter: unique, and far cheaper than uuid4.
    prefix = secrets.token_hex(4)
    for number in itertools.count(1):
        yield f"{prefix}-{number:x}"


def _audit_read(audit: AuditLog, request: web.Request, status: int, request_id: str, listener: str) -> None:
    record: dict[str, Any] = {
        "type": "read",
        "request_id": request_id,
        "client": request.get(CLIENT_KEY),
        "listener": listener,
        "secret_id": request.get(SECRET_ID_KEY),
    }
    peer = request.get(PEER_KEY)
    if peer is not None:
        record.update(peer_uid=peer.uid, peer_pid=peer.pid)
    record.update(decision=request.get(DECISION_KEY, "deny"), status=status, cache=request.get(CACHE_KEY))
    for item in request.get(SERVED_KEY) or [{}]:
        audit.write({**record, **item})


def observe_middleware(metrics: Metrics, audit: AuditLog | None = None) -> Any:
    """Outermost: request id, error rendering, one log line, metrics and the audit record per request."""
    request_ids = _request_ids()

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = _client_request_id(request) or next(request_ids)
        # Requests on one keep-alive connection share a task (and so a context):
        # binding overwrites the previous request's id.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        error: AgentError | None = None
        try:
            response = await handler(request)
        except AgentError as exc:
            error = exc
            response = error_response(exc, close=isinstance(exc, TooManyConnections))
        except web.HTTPException as exc:
            error = _from_http_exception(exc)
            response = error_response(error)
        except Exception:
            log.exception("request_failed", path=request.path)
            error = AgentError("internal error")
            response = error_response(error)
        response.headers["X-Request-Id"] = request_id
        route = request.match_info.route.name or "unknown"
        elapsed = time.perf_counter() - started
        listener = _listener(request)
        if audit is not None and audit.enabled and route in READ_ROUTES:
            _audit_read(audit, request, response.status, request_id, listener)
        metrics.observe_request(route, response.status, elapsed)
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "status": response.status,
            "latency_ms": round(elapsed * 1000, 3),
            "listener": listener,
            "client": request.get(CLIENT_KEY, "-"),
        }
        if SECRET_ID_KEY in request:
            fields["secret_id"] = request[SECRET_ID_KEY]
        if CACHE_KEY in request:
            fields["cache"] = request[CACHE_KEY]
        if error is not None:
            fields["error"] = error.code
        log.info("request", **fields)
        return response

    return observe


def guard_middleware(
    limiter: ConnectionLimiter,
    auth: Authenticator,
    rates: RateLimiter,
    metrics: Metrics,
    *,
    metrics_public: bool,
) -> Any:
    """The SSRF guard, in AWS's order (see module docstring), then the client's rate limit."""
    public = ALWAYS_PUBLIC | ({"/metrics"} if metrics_public else set())

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limiter.over_limit(request):
            raise TooManyConnections("connection limit exceeded")
        if "X-Forwarded-For" in request.headers:
            raise BadRequest("requests with X-Forwarded-For are refused")
        peer = peer_credentials(request.transport) if request.path not in public else None
        if peer is not None:
            request[PEER_KEY] = peer
        if is_sdk_request(request):
            # AWS SDKs authenticate with SigV4, verified by the handler; a SigV4
            # Authorization header is not a bearer token and the method is POST.
            return await handler(request)
        if request.path not in public:
            who = auth.identify(request.headers, peer)
            if who.client is None:
                metrics.auth_failures.labels(who.how).inc()
                raise Forbidden("missing or invalid token")
            request[CLIENT_KEY] = who.client
            if not rates.allow(who.client):
                metrics.rate_limited.labels(who.client).inc()
                raise TooManyRequests("client rate limit exceeded")
        if request.method != "GET":
            raise MethodNotAllowed("only GET is allowed")
        return await handler(request)

    return guard
