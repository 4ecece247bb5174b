"""Connection budgets and timeouts: no local process can hold the agent's connections hostage.

aiohttp exposes no connection hook, so :meth:`ConnectionGuard.install` wraps
the server's ``connection_made``/``connection_lost`` on the instance and the
request handler reports the first byte of each request (:meth:`bytes_arrived`);
the observe middleware reports when a request starts and ends, and the hot
path when it answered one (:meth:`answered`). From that:

Budgets. TCP and the Unix socket have separate budgets, so a flood of idle TCP
connections (any local process can open them, no token needed) cannot starve
socket clients; on the socket each peer uid (``SO_PEERCRED``) also has a cap,
since socket peers, unlike loopback TCP peers, can be told apart. A connection
opened over its budget is marked: its requests are refused (429, connection
closed), except the health routes, which are answered (and the connection then
closed) so orchestrator probes keep working during a flood, as AWS's agent
keeps spare slots for ``/ping``. A marked connection does not count against
any budget (one uid's excess cannot fill the socket's budget for others) and
is closed after ``header_timeout`` if it sends nothing.

File descriptors. Budgets only help if the process can hold that many
sockets: :func:`fd_budget` raises the soft ``RLIMIT_NOFILE`` towards what the
budgets need (within the hard limit) and says so when it cannot.

Timeouts. A connection with no request in progress is closed after
``idle_timeout`` (keep-alive); one whose request has started arriving but whose
headers are not complete after ``header_timeout`` is closed (slowloris); a
request body must arrive within ``body_timeout`` (enforced by the guard where
the body is read). A sweeper checks every ``SWEEP_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from agent.core.log import get_logger

log = get_logger("agent.connections")

SWEEP_INTERVAL_SECONDS = 0.5
# File descriptors beyond the two budgets: listeners, upstream connections, files, the event loop.
FD_HEADROOM = 128
_PEERCRED = struct.Struct("3i")
Phase = Literal["idle", "headers", "active", "closing"]


@dataclass
class _Conn:
    listener: Literal["tcp", "unix"]
    uid: int | None
    over: bool
    phase: Phase
    since: float


def _peer_uid(transport: Any) -> tuple[Literal["tcp", "unix"], int | None]:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return "tcp", None
    try:
        _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return "unix", None
    return "unix", uid


class ConnectionGuard:
    """Counts connections per listener and per Unix peer uid, and closes those that stall."""

    def __init__(
        self,
        *,
        max_tcp: int,
        max_unix: int,
        max_per_uid: int,
        idle_timeout: float,
        header_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_tcp = max_tcp
        self.max_unix = max_unix
        self.max_per_uid = max_per_uid
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self._clock = clock
        self._conns: dict[Any, _Conn] = {}
        self._open: Counter[str] = Counter()
        self._per_uid: Counter[int] = Counter()
        self.closed_for_timeout = 0

    @property
    def open(self) -> int:
        """Connections open on both listeners."""
        return len(self._conns)

    def install(self, server: web.Server) -> None:
        """Start tracking connections of ``server`` (call once, before sites start)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            self._made(handler, transport)
            made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._lost(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _made(self, handler: Any, transport: Any) -> None:
        listener, uid = _peer_uid(transport)
        if listener == "tcp":
            over = self._open["tcp"] >= self.max_tcp
        else:
            over = self._open["unix"] >= self.max_unix or (uid is not None and self._per_uid[uid] >= self.max_per_uid)
        if not over:  # a marked connection counts against nothing: it is on its way out
            self._open[listener] += 1
            if uid is not None:
                self._per_uid[uid] += 1
        self._conns[handler] = _Conn(listener, uid, over, "idle", self._clock())

    def _lost(self, handler: Any) -> None:
        conn = self._conns.pop(handler, None)
        if conn is None or conn.over:
            return
        self._open[conn.listener] -= 1
        if conn.uid is not None:
            self._per_uid[conn.uid] -= 1
            if not self._per_uid[conn.uid]:
                del self._per_uid[conn.uid]

    def bytes_arrived(self, handler: Any) -> None:
        """The first bytes of a request arrived on an idle connection: its headers are now on the clock."""
        conn = self._conns.get(handler)
        if conn is not None and conn.phase == "idle":
            conn.phase, conn.since = "headers", self._clock()

    def request_started(self, request: web.Request) -> None:
        """Headers complete: the request is being handled."""
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.phase, conn.since = "active", self._clock()

    def request_finished(self, request: web.Request) -> None:
        """The response is ready: the connection is idle (keep-alive) again."""
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.phase, conn.since = "idle", self._clock()

    def over_limit(self, request: web.Request) -> bool:
        """True when the request's connection was opened past its budget."""
        return self.is_over(request.protocol)

    def is_over(self, handler: Any) -> bool:
        """True when ``handler``'s connection was opened past its budget."""
        conn = self._conns.get(handler)
        return conn is not None and conn.over

    def answered(self, handler: Any) -> None:
        """The hot path answered a whole request on ``handler``'s connection: idle (keep-alive) again from now."""
        conn = self._conns.get(handler)
        if conn is not None:
            conn.phase, conn.since = "idle", self._clock()

    def expired(self) -> list[Any]:
        """Handlers of connections idle past ``idle_timeout`` or stuck in their headers past ``header_timeout``."""
        now = self._clock()
        return [
            handler
            for handler, conn in self._conns.items()
            if (conn.phase == "idle" and now - conn.since > (self.header_timeout if conn.over else self.idle_timeout))
            or (conn.phase == "headers" and now - conn.since > self.header_timeout)
        ]

    async def sweep_forever(self, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
        """Close expired connections until cancelled."""
        while True:
            await asyncio.sleep(interval)
            for handler in self.expired():
                self._conns[handler].phase = "closing"  # counted as lost when connection_lost follows
                self.closed_for_timeout += 1
                handler.force_close()


def fd_budget(max_tcp: int, max_unix: int) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` towards what the budgets need; ``(needed, soft limit now)``.

    Raising the soft limit up to the hard one needs no privilege (a seccomp
    filter may still refuse it: then the limit is left as it is).
    """
    needed = max_tcp + max_unix + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return needed, soft
