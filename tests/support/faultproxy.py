"""A small fault-injecting HTTP proxy for tests: agent → proxy → moto_server.

It forwards every request to the upstream unless a :class:`Fault` matches the
request's operation (``X-Amz-Target`` for JSON services, ``Action=`` for query
services such as STS). Faults answer with an AWS error, delay, drop the
connection, or hang. It also counts requests per operation, which is how tests
assert "no upstream call" without trusting the agent's own metrics, and can
rewrite JSON replies (:meth:`FaultProxy.shift_dates`: upstream's clock moved).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from aiohttp import ClientOSError, ClientSession, ServerDisconnectedError, web

from agent.dev.emulator import free_port

Kind = Literal["error", "delay", "drop", "hang"]


@dataclass
class Fault:
    """What to do to requests for ``operation`` (``"*"`` for all), ``times`` times (None: forever)."""

    operation: str
    kind: Kind
    status: int = 500
    code: str = "InternalServiceError"
    seconds: float = 0.0
    times: int | None = None


def operation_of(headers: dict[str, str] | object, body: bytes) -> str:
    """``GetSecretValue`` from ``secretsmanager.GetSecretValue`` or ``Action=GetCallerIdentity``."""
    target = getattr(headers, "get", lambda _k, _d=None: None)("X-Amz-Target")
    if target:
        return str(target).rpartition(".")[2]
    action = parse_qs(body.decode(errors="replace")).get("Action")
    return action[0] if action else "unknown"


def access_key_of(authorization: str) -> str:
    """The access key id in a SigV4 ``Authorization`` header (``Credential=AKID/date/...``), or ``""``."""
    _, found, rest = authorization.partition("Credential=")
    return rest.split("/", 1)[0] if found else ""


class FaultProxy:
    """Reverse proxy with injectable faults, run on the test's event loop."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.times: list[tuple[float, str]] = []  # (monotonic time, operation) of every request
        self.signers: list[tuple[str, str]] = []  # (operation, SigV4 access key id) of every request
        self.rewrites: list[Callable[[str, dict[str, Any]], None]] = []  # (operation, JSON reply) edited in place
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        """Endpoint URL to give the agent."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> None:
        """Start applying ``fault``."""
        self.faults.append(fault)

    def clear(self) -> None:
        """Forward everything again."""
        self.faults.clear()
        self.rewrites.clear()

    def shift_dates(self, seconds: float) -> None:
        """Move every date in Secrets Manager replies by ``seconds`` (negative: as if it all happened earlier)."""

        def shift(_operation: str, reply: dict[str, Any]) -> None:
            _shift(reply, seconds)

        self.rewrites.append(shift)

    def _match(self, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation in ("*", operation) and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    @staticmethod
    def _error(fault: Fault, *, json_protocol: bool) -> web.Response:
        message = f"injected {fault.code}"
        if json_protocol:  # Secrets Manager, SQS: the JSON protocol
            return web.Response(
                status=fault.status,
                text=json.dumps({"__type": fault.code, "message": message}),
                content_type="application/x-amz-json-1.1",
                headers={"x-amzn-ErrorType": fault.code},
            )
        # STS and other query-protocol services answer in XML.
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{fault.code}</Code><Message>{message}</Message>"
            "</Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
        )
        return web.Response(status=fault.status, text=xml, content_type="text/xml")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(request.headers, body)
        self.calls[operation] += 1
        self.times.append((time.monotonic(), operation))
        self.signers.append((operation, access_key_of(request.headers.get("Authorization", ""))))
        fault = self._match(operation)
        if fault is not None:
            if fault.kind == "error":
                return self._error(fault, json_protocol="X-Amz-Target" in request.headers)
            if fault.kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if fault.kind == "hang":
                await asyncio.sleep(3600)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        for attempt in (1, 2):
            try:
                async with self._session.request(
                    request.method, self.upstream + request.path_qs, data=body, headers=headers
                ) as reply:
                    data = self._rewrite(operation, await reply.read())
                    passthrough = {
                        k: v
                        for k, v in reply.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
                    }
                    return web.Response(status=reply.status, body=data, headers=passthrough)
            except (ServerDisconnectedError, ClientOSError):
                # moto closed a pooled keep-alive connection: not a fault we meant to inject.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _rewrite(self, operation: str, data: bytes) -> bytes:
        if not self.rewrites:
            return data
        try:
            reply = json.loads(data)
        except ValueError:
            return data
        if not isinstance(reply, dict):
            return data
        for rewrite in self.rewrites:
            rewrite(operation, reply)
        return json.dumps(reply).encode()

    async def start(self) -> FaultProxy:
        """Listen on 127.0.0.1:port."""
        self._session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        """Close the listener and the upstream session."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


DATE_KEYS = frozenset(
    {"CreatedDate", "LastRotatedDate", "NextRotationDate", "LastChangedDate", "LastAccessedDate", "DeletedDate"}
)


def _shift(node: Any, seconds: float) -> None:
    """Add ``seconds`` to every epoch date (the JSON protocol's dates are numbers) under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in DATE_KEYS and isinstance(value, int | float):
                node[key] = value + seconds
            else:
                _shift(value, seconds)
    elif isinstance(node, list):
        for item in node:
            _shift(item, seconds)
