"""aiohttp's connection layer, adjusted: connection tracking, and parser errors that echo nothing.

:class:`AgentRunner` is aiohttp's ``AppRunner`` whose server hands out
:class:`AgentRequestHandler` per connection. The handler does three things
aiohttp's does not:

- it offers each chunk it receives to the hot path
  (:mod:`agent.server.fastpath`), which answers fresh cache hits itself; the
  first chunk it declines is parsed by aiohttp, which keeps the connection;

- it tells the :class:`~agent.server.connections.ConnectionGuard` when the
  first bytes of a request arrive, so a request that trickles in is bounded by
  ``header_timeout`` and not by the keep-alive timeout;
- a request the HTTP parser rejects (bad request line, folded or malformed
  header, oversized field) is answered in the agent's JSON error shape with a
  fixed message. aiohttp's own answer is plain text quoting the offending
  bytes, which echoed a fragment of a token header back in one probe.

Both hook aiohttp internals (``AppRunner._make_server`` and the handler class
``Server.__call__`` builds), which are stable across aiohttp 3.x; the
dependency is pinned below 4.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from agent.core.log import get_logger
from agent.server.connections import ConnectionGuard
from agent.server.fastpath import FastConnection, FastPath
from agent.server.requestlog import RequestLog

log = get_logger("agent.protocol")

_MALFORMED = json.dumps({"__type": "InvalidRequestException", "message": "malformed HTTP request"}).encode()
_INTERNAL = json.dumps({"__type": "InternalFailure", "message": "internal error"}).encode()


class AgentRequestHandler(RequestHandler):
    """One connection: aiohttp's handler plus the hot path, first-byte reporting and non-echoing parser errors."""

    _fast: FastConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """aiohttp's setup (the guard counts the connection), then the hot path when the server has one."""
        super().connection_made(transport)
        manager = self._manager
        if isinstance(manager, AgentServer) and manager.fast is not None:
            self._fast = manager.fast.connection(self, transport)

    def data_received(self, data: bytes) -> None:
        """Offer the bytes to the hot path; else report them to the connection guard and parse as aiohttp does."""
        fast = self._fast
        if fast is not None:
            # Closing (shutdown, a timeout): aiohttp ignores what arrives, and so must the hot path.
            if not (self._force_close or self._close) and fast.offer(data):
                return
            self._fast = None  # handed off: this connection stays with aiohttp from here on
        manager = self._manager
        if isinstance(manager, AgentServer) and data:
            manager.guard.bytes_arrived(self)
        super().data_received(data)

    def answered_by_fast_path(self) -> None:
        """The hot path answered a request: aiohttp's keep-alive timeout counts from now."""
        if self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse or handle, without echoing any of its bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already on the wire; closing the connection")
        if status >= 500:  # a bug below the app (our middleware catches handler errors): keep the traceback
            log.error("request_handling_failed", status=status, exc_info=exc)
        else:  # the class name only: a parser error's text quotes the request's bytes
            manager = self._manager
            request_log = manager.request_log if isinstance(manager, AgentServer) else None
            # A scanner's garbage must not flood the log: capped per status like request lines
            # (past the cap at debug, as they are).
            report = log.info if request_log is None or request_log.may_write("malformed", status, "-") else log.debug
            report("malformed_request", status=status, error=type(exc).__name__ if exc is not None else None)
        response = web.Response(
            status=status, body=_MALFORMED if status < 500 else _INTERNAL, content_type="application/json"
        )
        response.force_close()
        return response


class AgentServer(web.Server):
    """aiohttp's ``Server`` building :class:`AgentRequestHandler` connections that report to ``guard``."""

    guard: ConnectionGuard
    fast: FastPath | None = None
    request_log: RequestLog | None = None

    def __call__(self) -> RequestHandler:
        """A handler for one new connection (the event loop's protocol factory)."""
        return AgentRequestHandler(self, loop=self._loop, **self._kwargs)


class AgentRunner(web.AppRunner):
    """``AppRunner`` serving through :class:`AgentServer` with ``guard`` counting its connections."""

    def __init__(
        self,
        app: web.Application,
        *,
        guard: ConnectionGuard,
        fast: FastPath | None = None,
        request_log: RequestLog | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        self._fast = fast
        self._request_log = request_log

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = AgentServer  # same object and state; only the handler class it builds differs
        assert isinstance(server, AgentServer)
        server.guard = self._guard
        server.fast = self._fast
        server.request_log = self._request_log
        self._guard.install(server)
        return server
