"""Request pipeline: observe (id, timing, errors, log line, metrics, audit) then guard.

Guard order follows AWS's agent, so clients see the same refusals:

1. connection limit  → 429 (connection opened while ``max_connections`` were open)
2. ``X-Forwarded-For`` → 400 (the request came through a proxy: possible SSRF)
3. identity           → 403 (missing and wrong token look the same); on the SDK
   route (``POST /`` with ``X-Amz-Target``) the SigV4 signature instead
4. the client's ``rate_per_second`` → 429
5. method not GET (the SDK route is POST) → 405
6. unknown path       → 404 (raised by routing, rendered here)

``/ping``, ``/healthz`` and ``/readyz`` skip steps 3-4 (and ``/metrics`` when
configured public); they reveal nothing about secrets. Every refusal is an
:class:`~agent.core.errors.AgentError` rendered once, by ``observe``: as the
HTTP API's ``{"__type", "message"}`` body, or, for a request the guard took as
an SDK call (from its signature check on), in the AWS JSON-protocol form SDKs
parse. Connection-level refusals (the connection limit, an oversized body) keep
the HTTP form and status whatever the route.

A read is audited before its response is sent. With ``[audit] on_failure =
"deny"`` a read whose record cannot be written, or any read while the audit
file's last reopen failed, is answered 503 ``AuditUnavailableException``
instead (in the same form as any other error for that request).
"""

from __future__ import annotations

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
from agent.access.identity import Authenticator, RateLimiter, peer_credentials
from agent.core.errors import (
    AgentError,
    AuditUnavailable,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    SignatureError,
    TooManyConnections,
    TooManyRequests,
    UnrecognizedClient,
)
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.server import sdk
from agent.server.connections import ConnectionLimiter
from agent.server.context import CACHE_KEY, CLIENT_KEY, DECISION_KEY, PEER_KEY, SDK_KEY, SECRET_ID_KEY, SERVED_KEY

log = get_logger("agent.access_log")

READ_ROUTES = frozenset({"get", "v1", "value", "sdk"})
ALWAYS_PUBLIC = frozenset({"/ping", "/healthz", "/readyz"})
MAX_REQUEST_ID = 64
# aiohttp's own refusals (routing, body size), as the agent's errors.
_HTTP_ERRORS: dict[int, tuple[type[RequestError], str]] = {
    404: (NotFound, "not found"),
    405: (MethodNotAllowed, "only GET is allowed"),
    413: (PayloadTooLarge, "request body too large"),
}


def error_response(error: AgentError) -> web.Response:
    """The AWS-style error body ``{"__type": code, "message": text}``."""
    body = json.dumps({"__type": error.code, "message": error.message}).encode()
    return web.Response(status=error.status, body=body, content_type="application/json")


def _from_http_exception(exc: web.HTTPException) -> AgentError:
    if exc.status in _HTTP_ERRORS:
        kind, message = _HTTP_ERRORS[exc.status]
        return kind(message)
    return RequestError(exc.reason) if exc.status < 500 else AgentError(exc.reason)


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


def _audit_read(
    audit: AuditLog, request: web.Request, status: int, request_id: str, listener: str
) -> AuditUnavailable | None:
    """Write the read's record(s); the refusal to answer instead, if the audit trail fails closed."""
    refusal = AuditUnavailable("the read could not be audited") if audit.refuses_reads else None
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
    entries = [{**record, **item} for item in request.get(SERVED_KEY) or [{}]]
    if refusal is not None:  # recorded (in the old file, if it can be) as what the caller gets
        for entry in entries:
            entry["status"] = refusal.status
    if not audit.write_all(entries) and audit.on_failure == "deny":
        return AuditUnavailable("the read could not be audited")
    return refusal


def observe_middleware(metrics: Metrics, audit: AuditLog) -> Any:
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
        except web.HTTPException as exc:
            error = _from_http_exception(exc)
        except Exception:
            log.exception("request_failed", path=request.path)
            error = AgentError("internal error")
        route = request.match_info.route.name or "unknown"
        if error is not None:
            as_sdk = SDK_KEY in request and not isinstance(error, TooManyConnections | PayloadTooLarge)
            response = sdk.error_response(error) if as_sdk else error_response(error)
            if isinstance(error, TooManyConnections):
                response.force_close()  # sends Connection: close and drops the connection after
        response.headers["X-Request-Id"] = request_id
        elapsed = time.perf_counter() - started
        listener = _listener(request)
        if audit.enabled and route in READ_ROUTES:
            refusal = _audit_read(audit, request, response.status, request_id, listener)
            if refusal is not None:  # nothing has been sent yet: the refusal replaces the response
                error = refusal
                response = sdk.error_response(error) if SDK_KEY in request else error_response(error)
                response.headers["X-Request-Id"] = request_id
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
    """The SSRF guard in AWS's order (see module docstring): connections, proxies, identity, rate, method."""
    public = ALWAYS_PUBLIC | ({"/metrics"} if metrics_public else set())

    async def identify(request: web.Request) -> str:
        if sdk.is_sdk_request(request):
            # AWS SDKs authenticate with SigV4: a SigV4 Authorization header is not a bearer token.
            request[SDK_KEY] = True  # from here on, refusals are answered as the SDK expects
            try:
                return await sdk.authenticate(request, auth.secret_for)
            except SignatureError as exc:
                metrics.auth_failures.labels(
                    "unknown_key" if isinstance(exc, UnrecognizedClient) else "bad_signature"
                ).inc()
                raise
        who = auth.identify(request.headers, request.get(PEER_KEY))
        if who.client is None:
            metrics.auth_failures.labels(who.how).inc()
            raise Forbidden("missing or invalid token")
        return who.client

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limiter.over_limit(request):
            raise TooManyConnections("connection limit exceeded")
        if "X-Forwarded-For" in request.headers:
            raise BadRequest("requests with X-Forwarded-For are refused")
        if request.path not in public:
            peer = peer_credentials(request.transport)
            if peer is not None:
                request[PEER_KEY] = peer
            client = await identify(request)
            request[CLIENT_KEY] = client
            if not rates.allow(client):
                metrics.rate_limited.labels(client).inc()
                raise TooManyRequests("client rate limit exceeded")
        if request.method != "GET" and SDK_KEY not in request:
            raise MethodNotAllowed("only GET is allowed")
        return await handler(request)

    return guard
