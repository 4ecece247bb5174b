"""Request pipeline: observe (id, timing, errors, log line, metrics, audit) then guard.

Guard order follows AWS's agent, so clients see the same refusals:

1. connection budget → 429 (connection opened over its listener's or its uid's
   budget); the health routes are still answered, and the connection closed
2. HTTP/0.9 or an absolute-form target (``GET http://host/…``) → 400
3. ``X-Forwarded-For`` → 400 (the request came through a proxy: possible SSRF);
   on TCP, a ``Host`` that is not a loopback name or address (DNS rebinding)
   nor in ``server.allowed_hosts`` → 400
4. identity           → 403 (missing and wrong token look the same); on the SDK
   route (``POST /`` with ``X-Amz-Target``) the SigV4 signature instead, over
   a body that must arrive within ``server.body_timeout_seconds`` (else 408)
5. the client's ``rate_per_second`` → 429
6. method not GET (the SDK route is POST) → 405
7. unknown path       → 404 (raised by routing, rendered here)

``/ping``, ``/healthz`` and ``/readyz`` skip steps 4-5 (and ``/metrics`` when
configured public); they reveal nothing about secrets. So do ``/ui`` and its
assets: static files that hold no data (the page fetches ``/status`` with the
token the user types). Every refusal is an
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

import functools
import ipaddress
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import HttpVersion, web
from aiohttp.typedefs import Handler

from agent.access.audit import AuditLog
from agent.access.identity import Peer, peer_credentials
from agent.config.loader import is_loopback_host
from agent.core.errors import (
    AgentError,
    AuditUnavailable,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    SignatureError,
    TooManyConnections,
    TooManyRequests,
    UnrecognizedClient,
)
from agent.core.log import get_logger
from agent.server import sdk, ui
from agent.server.connections import ConnectionGuard
from agent.server.context import (
    CACHE_KEY,
    CLIENT_KEY,
    DECISION_KEY,
    PEER_KEY,
    ROLE_KEY,
    SDK_KEY,
    SECRET_ID_KEY,
    SERVED_KEY,
    Components,
)
from agent.server.requestlog import RequestLog, request_fields

log = get_logger("agent.access_log")

READ_ROUTES = frozenset({"get", "v1", "value", "sdk", "parameter"})
ALWAYS_PUBLIC = frozenset({"/ping", "/healthz", "/readyz"})
MAX_REQUEST_ID = 64
HTTP_1_0 = HttpVersion(1, 0)
# Refusals about the connection rather than the request: always the HTTP form, and the connection closed.
CONNECTION_LEVEL = (TooManyConnections, PayloadTooLarge, RequestTimeout)
# aiohttp's own refusals (routing, body size), as the agent's errors.
_HTTP_ERRORS: dict[int, tuple[type[RequestError], str]] = {
    404: (NotFound, "not found"),
    405: (MethodNotAllowed, "only GET is allowed"),
    413: (PayloadTooLarge, "request body too large"),
}


def error_body(error: AgentError) -> bytes:
    """The AWS-style error body ``{"__type": code, "message": text}``."""
    return json.dumps({"__type": error.code, "message": error.message}).encode()


def error_response(error: AgentError) -> web.Response:
    """The error as a response: its status, the AWS-style body (:func:`error_body`)."""
    return web.Response(status=error.status, body=error_body(error), content_type="application/json")


def _from_http_exception(exc: web.HTTPException) -> AgentError:
    if exc.status in _HTTP_ERRORS:
        kind, message = _HTTP_ERRORS[exc.status]
        return kind(message)
    return RequestError(exc.reason) if exc.status < 500 else AgentError(exc.reason)


def _listener(request: web.Request) -> str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport else None
    return "unix" if isinstance(sockname, str | bytes) else "tcp"


def client_request_id(given: str | None) -> str | None:
    """A caller's ``X-Request-Id``, when short and plain enough to echo and log (so it cannot forge lines)."""
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return None


def _request_ids() -> Iterator[str]:
    # A random per-process prefix and a counter: unique, and far cheaper than uuid4.
    prefix = secrets.token_hex(4)
    for number in itertools.count(1):
        yield f"{prefix}-{number:x}"


# One sequence for both paths (aiohttp's and the hot path), so ids never repeat within a process.
next_request_id = _request_ids().__next__


def audit_read(
    audit: AuditLog,
    *,
    client: str | None,
    listener: str,
    secret_id: str | None,
    request_id: str,
    status: int,
    peer: Peer | None = None,
    role_arn: str | None = None,
    decision: str = "deny",
    cache: str | None = None,
    served: list[dict[str, Any]] | None = None,
) -> AuditUnavailable | None:
    """Write a read's record(s); the refusal to answer instead, if the audit trail fails closed."""
    refusal = AuditUnavailable("the read could not be audited") if audit.refuses_reads else None
    record: dict[str, Any] = {
        "type": "read",
        "request_id": request_id,
        "client": client,
        "listener": listener,
        "secret_id": secret_id,
    }
    if role_arn is not None:
        record["role_arn"] = role_arn
    if peer is not None:
        record.update(peer_uid=peer.uid, peer_pid=peer.pid)
    record.update(decision=decision, status=status, cache=cache)
    entries = [{**record, **item} for item in served or [{}]]
    if refusal is not None:  # recorded (in the old file, if it can be) as what the caller gets
        for entry in entries:
            entry["status"] = refusal.status
    if not audit.write_all(entries) and audit.on_failure == "deny":
        return AuditUnavailable("the read could not be audited")
    return refusal


def observe_middleware(requests: RequestLog, audit: AuditLog, connections: ConnectionGuard) -> Any:
    """Outermost: request id, error rendering, the request's accounting (log, metrics) and audit record."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        connections.request_started(request)
        try:
            return await observed(request, handler)
        finally:
            connections.request_finished(request)  # idle (keep-alive) again, whatever happened

    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = client_request_id(request.headers.get("X-Request-Id")) or next_request_id()
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
            as_sdk = SDK_KEY in request and not isinstance(error, CONNECTION_LEVEL)
            response = sdk.error_response(error) if as_sdk else error_response(error)
            if isinstance(error, CONNECTION_LEVEL):
                response.force_close()  # sends Connection: close and drops the connection after
        if connections.over_limit(request):
            response.force_close()  # a health probe answered over the budget: give the slot back
        response.headers["X-Request-Id"] = request_id
        elapsed = time.perf_counter() - started
        listener = _listener(request)
        if audit.enabled and route in READ_ROUTES:
            refusal = audit_read(
                audit,
                client=request.get(CLIENT_KEY),
                listener=listener,
                secret_id=request.get(SECRET_ID_KEY),
                request_id=request_id,
                status=response.status,
                peer=request.get(PEER_KEY),
                role_arn=request.get(ROLE_KEY),
                decision=request.get(DECISION_KEY, "deny"),
                cache=request.get(CACHE_KEY),
                served=request.get(SERVED_KEY),
            )
            if refusal is not None:  # nothing has been sent yet: the refusal replaces the response
                closing = isinstance(error, CONNECTION_LEVEL) or connections.over_limit(request)
                error = refusal
                response = sdk.error_response(error) if SDK_KEY in request else error_response(error)
                response.headers["X-Request-Id"] = request_id
                if closing:
                    response.force_close()
        fields = request_fields(
            method=request.method,
            route=route,
            status=response.status,
            elapsed=elapsed,
            listener=listener,
            client=request.get(CLIENT_KEY, "-"),
            request_id=request_id,
            secret_id=request.get(SECRET_ID_KEY),
            role_arn=request.get(ROLE_KEY),
            cache=request.get(CACHE_KEY),
            error=error.code if error is not None else None,
        )
        requests.record(fields, elapsed)
        return response

    return observe


def host_name(header: str) -> str | None:
    """The host part of a ``Host`` header (``[::1]:2773`` → ``::1``, ``localhost.:2773`` → ``localhost``).

    None for a value that is not a host with an optional port (``[::1]evil.example``).
    """
    value = header.strip()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "x"
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return value[1:end]
    name, sep, port = value.rpartition(":")
    if sep and not port.isdigit():
        return None
    return (name if sep else value).rstrip(".") or None


def is_loopback_name(name: str) -> bool:
    """``localhost``, or a loopback address, an IPv4-mapped one (``::ffff:127.0.0.1``) included."""
    if is_loopback_host(name):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and mapped.is_loopback


@functools.lru_cache(maxsize=256)  # a handful of Host values repeat on every request
def host_allowed(header: str, allowed: frozenset[str]) -> bool:
    """True when a ``Host`` header names a loopback host or one of ``allowed`` (lower-case names)."""
    name = host_name(header)
    return name is not None and (name.lower() in allowed or is_loopback_name(name.lower()))


def guard_middleware(parts: Components) -> Any:
    """The SSRF guard in AWS's order (see module docstring): connections, proxies, identity, rate, method."""
    auth, rates, metrics, connections = parts.auth, parts.rates, parts.metrics, parts.connections
    public = ALWAYS_PUBLIC | ui.PATHS | ({"/metrics"} if parts.metrics_public else set())
    allowed_hosts = parts.allowed_hosts

    async def identify(request: web.Request) -> str:
        if sdk.is_sdk_request(request):
            # AWS SDKs authenticate with SigV4: a SigV4 Authorization header is not a bearer token.
            request[SDK_KEY] = True  # from here on, refusals are answered as the SDK expects
            try:
                return await sdk.authenticate(request, auth.secret_for, body_timeout=parts.body_timeout_seconds)
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

    def check_host(request: web.Request) -> None:
        # A browser tricked by DNS rebinding sends its own site's name; loopback names and
        # addresses (and configured names) only. The Unix socket cannot be reached from a browser.
        header = request.headers.get("Host")
        if header is None or allowed_hosts is None or _listener(request) == "unix":
            return
        if not host_allowed(header, allowed_hosts):
            raise BadRequest("the Host header must name a loopback address (or one in server.allowed_hosts)")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if connections.over_limit(request) and request.path not in ALWAYS_PUBLIC:
            raise TooManyConnections("connection limit exceeded")
        if request.version < HTTP_1_0 or not request.raw_path.startswith("/"):
            # HTTP/0.9, and absolute-form targets (GET http://host/...) meant for a proxy.
            raise BadRequest("only origin-form requests over HTTP/1.0 or later are served")
        if "X-Forwarded-For" in request.headers:
            raise BadRequest("requests with X-Forwarded-For are refused")
        check_host(request)
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
