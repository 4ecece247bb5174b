"""The hot path: fresh cache hits answered below aiohttp, every other request left to it.

aiohttp's request objects, middleware chain and response machinery cost far
more CPU than a cached read needs (see issue 13). So each connection's
:class:`~agent.server.protocol.AgentRequestHandler` first offers every chunk
it receives to a :class:`FastConnection`, which parses it with ``httptools``
(llhttp) and answers it itself only when all of this holds:

- the chunk is exactly one complete request: ``GET``, HTTP/1.1, keep-alive,
  origin-form, no body, no NUL byte, no bare LF, ending at its blank line;
- its headers are all known plain ones (``Host``, the token headers,
  ``Authorization``, ``Accept``, ``Accept-Encoding``, ``User-Agent``,
  ``X-Request-Id``, ``Connection: keep-alive``), each at most once, in
  printable ASCII; the target only uses characters whose meaning no decoder
  changes (no ``%``, no ``+`` in the query, no dot segments);
- its route is ``/ping``, ``/healthz``, ``/secretsmanager/get`` or
  ``<path_prefix><id>`` (matched in the order aiohttp's router matches them),
  with known query parameters each given once (no ``refreshNow=true``, no
  ``roleArn``);
- it passes every guard, decided by the same code as the middleware's
  (:mod:`agent.server.middleware`): the connection is within its budget, the
  ``Host`` is allowed, the caller is identified, the policy allows the read,
  the client's rate limit has a token, and the audit trail is not refusing;
- and the secret is a fresh hit in its cache (:meth:`SecretReader.cached
  <agent.server.reader.SecretReader.cached>`).

Anything else is *handed off*: the chunk goes to aiohttp's parser unchanged
(nothing of it was answered), and the connection stays with aiohttp for good.
Until that point the checks change nothing, so aiohttp decides the request
from scratch: it sees exactly what it would have seen without this module.
A request the hot path answers is accounted by the same functions as
aiohttp's (the audit record, the read and request metrics, the request log
line) and its response carries the same status, headers and body; the
differential test (``tests/integration/test_fast_path.py``) pins that.

Clients repeat themselves: a connection sending the same bytes as a read it
had answered (one of its last few) is neither parsed nor decided again while
what the decision rests on holds (a :class:`_Ticket`: the same caller identification, the same
fresh cache entry; policies are fixed for the run). The audit trail's state
and the rate limit are decided on every read, and every read is accounted in
full. The body of a cached version is rendered once (``SecretValue.wire_json``);
the head is assembled from constant pieces. ``[server] fast_path = false``
turns the whole module off.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp.http import SERVER_SOFTWARE

from agent.access.audit import served
from agent.access.identity import Peer, Settled, peer_credentials
from agent.cache.store import FreshHit, SecretCache
from agent.core.errors import BadRequest
from agent.core.types import Selector
from agent.server.context import Components
from agent.server.middleware import (
    ALWAYS_PUBLIC,
    audit_read,
    client_request_id,
    error_body,
    host_allowed,
    next_request_id,
)
from agent.server.reads import READ_PARAMS, refresh_flag, selector_of
from agent.server.requestlog import request_fields

if TYPE_CHECKING:
    from agent.server.protocol import AgentRequestHandler

# Past this much unsent response data, the hot path steps aside: aiohttp applies back-pressure.
MAX_WRITE_BUFFER = 64 * 1024
# Reads remembered per connection, each keyed by its request bytes: a few secrets read in turn, and
# never much memory (at most 4 KiB of requests per connection, 1,600 connections by default; no value:
# a ticket refers to its cache entry weakly, so an evicted or replaced value is freed at once).
MAX_TICKETS = 4
MAX_TICKET_REQUEST = 1024
# A request longer than this is aiohttp's (its line and field limits are 8190 bytes each).
MAX_REQUEST = 4096
# A request target whose meaning is the same to every decoder (no escapes, no '+' in the query).
_PLAIN_TARGET = re.compile(rb"/[A-Za-z0-9/_+=.@:,-]*(?:\?[A-Za-z0-9/_.@:&=-]*)?")
_GET_PARAMS = READ_PARAMS - {"roleArn"} | {"secretId"}
_V1_PARAMS = READ_PARAMS - {"roleArn"}
_HEAD_END = b"\r\n\r\n"
# A header value is plain when nothing is left after deleting these (printable ASCII, space included).
_PRINTABLE = bytes(range(0x20, 0x7F))
_SERVER = f"\r\nDate: %s\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode()
_HEALTH = {"/ping": b"healthy", "/healthz": b"ok"}


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


_date = _Date()


def render(
    status: int, content_type: str, body: bytes, request_id: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """Response bytes as aiohttp writes them for a ``web.Response`` (same headers, same order)."""
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    head.extend(f"{name}: {value}" for name, value in headers)
    head.append(f"Content-Type: {content_type}")
    head.append(f"X-Request-Id: {request_id}")
    head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode() + _SERVER % _date() + body


# render(200, "application/json", body, request_id, (("X-Cache", "hit"), ("Age", age))) in one step:
# the response to a cache hit, the one the hot path writes most.
_HIT = (
    b"HTTP/1.1 200 OK\r\nX-Cache: hit\r\nAge: %d\r\nContent-Type: application/json\r\nX-Request-Id: %s\r\n"
    b"Content-Length: %d" + _SERVER
)


def render_hit(body: bytes, request_id: str, age: float) -> bytes:
    """The bytes :func:`render` gives for a cache hit ``age`` seconds old (a test pins that they agree)."""
    return _HIT % (int(age), request_id.encode(), len(body), _date()) + body


@dataclass(slots=True)
class _Ticket:
    """A read decided in full for one of a connection's requests, served again while it holds.

    It holds while the caller's identification would not change (the same
    bytes, so the same headers and peer, and :meth:`Authenticator.holds
    <agent.access.identity.Authenticator.holds>`) and the cache still finds the
    same entry fresh (:meth:`SecretCache.age_of
    <agent.cache.store.SecretCache.age_of>`); policies are fixed for the run.
    """

    route: str
    client: str
    secret_id: str
    selector: Selector
    request_id: str  # the caller's own X-Request-Id, or "" for one of ours per answer
    cache: SecretCache
    hit: FreshHit
    settled: Settled


class FastPath:
    """What every connection's hot path shares: the components and what is derived from them once."""

    def __init__(self, parts: Components) -> None:
        assert parts.request_log is not None
        self.parts = parts
        self.request_log = parts.request_log
        self.prefix = parts.path_prefix
        # Lower-case header name (ASCII bytes, as on the wire) → the name the guard code asks for. A
        # configured token header that is not ASCII is left out: a request carrying it is aiohttp's.
        names = ("Host", "Accept", "Accept-Encoding", "User-Agent", *parts.auth.header_names, "X-Request-Id")
        self.known_headers = {name.lower().encode(): name for name in names if name.isascii()}
        self.known_headers[b"connection"] = "Connection"

    def connection(self, handler: AgentRequestHandler, transport: Any) -> FastConnection:
        """The hot path of one new connection."""
        return FastConnection(self, handler, transport)


class FastConnection:
    """One connection's parser and state; :meth:`offer` answers a chunk or declines it."""

    def __init__(self, fast: FastPath, handler: AgentRequestHandler, transport: Any) -> None:
        self._fast = fast
        self._handler = handler
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self._listener = "unix" if isinstance(sockname, str | bytes) else "tcp"
        self._peer: Peer | None = peer_credentials(transport) if self._listener == "unix" else None
        self._parser = httptools.HttpRequestParser(self)
        self._begun = 0
        self._complete = False
        self._plain = True
        self._url = b""
        self._headers: dict[str, str] = {}
        # The last chunk parsed as a plain request, and its target (self._headers are its headers).
        self._last = b""
        self._target = ""
        # Reads decided on this connection, by their request bytes (an app may read a few secrets in turn).
        self._tickets: dict[bytes, _Ticket] = {}

    # httptools callbacks
    def on_message_begin(self) -> None:
        """A request starts."""
        self._begun += 1
        self._url = b""
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        """(Part of) the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header; unknown, repeated or not plain: the request is not the hot path's."""
        known = self._fast.known_headers.get(name.lower())  # bytes.lower: ASCII letters only, as the keys
        if known is None or known in self._headers or value.translate(None, _PRINTABLE):
            self._plain = False
            return
        self._headers[known] = value.decode("ascii")

    def on_message_complete(self) -> None:
        """The request ended."""
        self._complete = True

    def offer(self, data: bytes) -> bool:
        """Answer ``data`` if it is one request the hot path serves; False: nothing was done, hand it off."""
        if self._transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            return False
        ticket = self._tickets.get(data) if self._tickets else None
        if (
            ticket is not None
            and self._fast.parts.auth.holds(ticket.settled)
            and (age := ticket.cache.age_of(ticket.hit)) is not None
        ):
            # A read decided before, the caller still who it was and the entry still fresh:
            # only what can change between two reads (the audit trail, the rate limit) is decided again.
            response = self._serve(ticket, age, time.perf_counter())
        else:
            # The same bytes as the last plain request parse the same (and leave the parser as it
            # was, between requests): only the decisions are taken again.
            if data != self._last and not self._parse(data):
                return False
            response = self._answer(self._target)
        if response is None:
            return False
        self._transport.write(response)
        fast = self._fast
        fast.parts.metrics.observe_fast_path()
        fast.parts.connections.answered(self._handler)
        self._handler.answered_by_fast_path()
        return True

    def _parse(self, data: bytes) -> bool:
        """Parse ``data``: True when it is exactly one plain request (its target and headers kept)."""
        self._last = b""
        if (
            len(data) > MAX_REQUEST
            or not data.startswith(b"GET /")
            or data.find(_HEAD_END) != len(data) - 4
            or b"\x00" in data
            or data.count(b"\n") != data.count(b"\r\n")
        ):
            return False
        self._begun, self._complete, self._plain = 0, False, True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        parser = self._parser
        if not (
            self._begun == 1
            and self._complete
            and self._plain
            and parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and self._headers.get("Connection", "keep-alive").lower() == "keep-alive"
            and _PLAIN_TARGET.fullmatch(self._url)
        ):
            return False
        self._last, self._target = data, self._url.decode("ascii")
        return True

    def _answer(self, target: str) -> bytes | None:
        """The response to a plain GET of ``target``, or None to hand it off."""
        started = time.perf_counter()
        fast, parts = self._fast, self._fast.parts
        path, _, query = target.partition("?")
        if "/." in path or "//" in path:  # dot segments and empty ones: left to aiohttp's URL handling
            return None
        if path == "/secretsmanager/get":
            route, allowed = "get", _GET_PARAMS
        elif path.startswith(fast.prefix) and len(path) > len(fast.prefix):
            route, allowed = "v1", _V1_PARAMS
        elif path in _HEALTH:
            route, allowed = path[1:], None
        else:
            return None
        # The guard, in the middleware's order (its refusals are aiohttp's to give).
        if parts.connections.is_over(self._handler):
            return None
        host = self._headers.get("Host")
        if host is None:  # HTTP/1.1 requires one: aiohttp's to refuse
            return None
        if parts.allowed_hosts is not None and self._listener == "tcp" and not host_allowed(host, parts.allowed_hosts):
            return None
        request_id = client_request_id(self._headers.get("X-Request-Id")) or ""
        if allowed is None:
            assert path in ALWAYS_PUBLIC
            return self._health(route, _HEALTH[path], request_id, started)
        params = _query(query, allowed)
        if params is None:
            return None
        secret_id = params.get("secretId", "") if route == "get" else path[len(fast.prefix) :]
        try:
            selector = selector_of(params)
            if refresh_flag(params):
                return None
        except BadRequest:
            return None
        if not secret_id:
            return None
        auth = parts.auth
        client = auth.identify(self._headers, self._peer).client
        if client is None:
            return None
        found = parts.reader.cached(client, secret_id, selector)
        if found is None:
            return None
        cache, hit = found
        age = cache.age_of(hit)
        if age is None:
            return None
        ticket = _Ticket(route, client, secret_id, selector, request_id, cache, hit, auth.settled())
        tickets = self._tickets
        if len(self._last) <= MAX_TICKET_REQUEST:
            if len(tickets) >= MAX_TICKETS:
                tickets.clear()
            tickets[self._last] = ticket
        return self._serve(ticket, age, started)

    def _serve(self, ticket: _Ticket, age: float, started: float) -> bytes | None:
        """The response to the read ``ticket`` decided (its hit ``age`` seconds old); None: nothing done, hand off."""
        parts = self._fast.parts
        audit = parts.audit
        if audit.enabled and audit.refuses_reads:
            return None
        # From here the read is the hot path's: the first step with an effect (a rate token taken)
        # is the last that can decline it (declined, it took nothing and aiohttp decides again).
        client = ticket.client
        if not parts.rates.allow(client):
            return None
        parts.reader.served(client, ticket.cache, ticket.hit)
        request_id = ticket.request_id or next_request_id()
        value = ticket.hit.entry.value
        if audit.enabled:
            refusal = audit_read(
                audit,
                client=client,
                listener=self._listener,
                secret_id=ticket.secret_id,
                request_id=request_id,
                status=200,
                peer=self._peer,
                decision="allow",
                cache="hit",
                served=[served(value, ticket.selector)],
            )
            if refusal is not None:
                response = render(refusal.status, "application/json", error_body(refusal), request_id)
                return self._account(
                    ticket.route, client, refusal.status, request_id, started, ticket.secret_id, refusal.code, response
                )
        response = render_hit(value.wire_json, request_id, age)
        return self._account(ticket.route, client, 200, request_id, started, ticket.secret_id, None, response)

    def _account(
        self,
        route: str,
        client: str,
        status: int,
        request_id: str,
        started: float,
        secret_id: str | None,
        error: str | None,
        response: bytes,
    ) -> bytes:
        """The request's log line (or summary count) and metrics, as the middleware's; ``response`` back."""
        elapsed = time.perf_counter() - started
        if status == 200 and error is None and self._fast.request_log.routine(route, client, elapsed):
            return response  # counted into the summary; no line to build
        fields = request_fields(
            method="GET",
            route=route,
            status=status,
            elapsed=elapsed,
            listener=self._listener,
            client=client,
            request_id=request_id,
            secret_id=secret_id,
            cache="hit" if secret_id is not None else None,
            error=error,
        )
        self._fast.request_log.record(fields, elapsed)
        return response

    def _health(self, route: str, body: bytes, request_id: str, started: float) -> bytes:
        request_id = request_id or next_request_id()
        response = render(200, "text/plain; charset=utf-8", body, request_id)
        return self._account(route, "-", 200, request_id, started, None, None, response)


def _query(query: str, allowed: frozenset[str]) -> dict[str, str] | None:
    """``name=value&…`` with known names, each once; None for anything else (aiohttp's to answer or refuse)."""
    params: dict[str, str] = {}
    if not query:
        return params
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if not sep or not name or "=" in value or name not in allowed or name in params:
            return None
        params[name] = value
    return params
