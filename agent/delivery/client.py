"""A small synchronous client of a running agent, for ``get``, ``wait`` and ``exec``.

It talks to the agent the way any app would: over the Unix socket when one is
configured, else over TCP. It presents ``Settings.caller_token`` (``--token-file``
or ``SECRETS_AGENT_TOKEN``, else the shared ``auth.token``) as
``Authorization: Bearer``, which the agent accepts whatever ``auth.headers``
says; with no token at all it relies on the Unix peer's uid/gid. Plain
``http.client``: a CLI that reads one secret should not start an event loop.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from agent.access.identity import TokenSource
from agent.config import Settings
from agent.core.errors import AgentUnreachable, ReadDenied, ReadFailed, ReadNotFound

TIMEOUT_SECONDS = 10.0
# ``ssm:/app/db/host``: a Parameter Store name (Secrets Manager names cannot contain ':').
SSM_PREFIX = "ssm:"


@dataclass(frozen=True)
class Reply:
    """Status, headers and body of one answer."""

    status: int
    body: bytes
    headers: dict[str, str]

    def error_type(self) -> str:
        """The ``__type`` of an error body, if any."""
        try:
            return str(json.loads(self.body).get("__type", ""))
        except (ValueError, AttributeError):
            return ""

    def raise_for_status(self, what: str) -> None:
        """Raise the :class:`~agent.core.errors.ReadFailed` that fits a non-200 answer about ``what``."""
        if self.status == 200:
            return
        kind = {404: ReadNotFound, 403: ReadDenied}.get(self.status, ReadFailed)
        raise kind(f"{what}: {self.status} {self.error_type() or 'error'}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def read_token(settings: Settings) -> str | None:
    """The token to present (env value, or the token file's content), if any."""
    ref = settings.caller_token
    if ref is None:
        return None
    return TokenSource(ref, time.monotonic).current().decode("utf-8", "surrogateescape") or None


class AgentClient:
    """GET requests to the agent, over its Unix socket if it has one."""

    def __init__(self, settings: Settings, *, token: str | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
        self._settings = settings
        self._token = token if token is not None else read_token(settings)
        self._timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        server = self._settings.server
        if server.unix_socket:
            return _UnixConnection(server.unix_socket, self._timeout)
        host = server.http_host if server.http_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        return http.client.HTTPConnection(host, server.http_port, timeout=self._timeout)

    def get(self, path: str) -> Reply:
        """One GET; raises :class:`AgentUnreachable` when nothing answers."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        connection = self._connection()
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return Reply(response.status, response.read(), dict(response.getheaders()))
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnreachable(str(exc) or type(exc).__name__) from exc
        finally:
            connection.close()

    def value(self, secret_id: str, *, field: str | None = None, stage: str | None = None) -> Reply:
        """``/value/<id>`` with optional field and stage; an ``ssm:`` id reads Parameter Store (stage: a label)."""
        if secret_id.startswith(SSM_PREFIX):
            return self._parameter_value(secret_id[len(SSM_PREFIX) :], field=field, label=stage)
        query = []
        if field:
            query.append(f"field={quote(field, safe='')}")
        if stage:
            query.append(f"versionStage={quote(stage, safe='')}")
        suffix = "?" + "&".join(query) if query else ""
        return self.get(f"/value/{quote(secret_id, safe='/:')}{suffix}")

    def version(self, secret_id: str) -> str | None:
        """The AWSCURRENT version id the agent serves for ``secret_id`` (None on error or no agent).

        For an ``ssm:`` id, the parameter's version number.
        """
        parameter = secret_id.startswith(SSM_PREFIX)
        prefix = self._settings.server.path_prefix
        path = (
            self._parameter_path(secret_id[len(SSM_PREFIX) :])
            if parameter
            else f"{prefix}{quote(secret_id, safe='/:')}"
        )
        try:
            reply = self.get(path)
        except AgentUnreachable:
            return None
        if reply.status != 200:
            return None
        data: dict[str, Any] = json.loads(reply.body)
        if parameter:
            return str(data.get("Parameter", {}).get("Version"))
        return str(data.get("VersionId"))

    @staticmethod
    def _parameter_path(name: str, label: str | None = None) -> str:
        query = f"name={quote(name, safe='/:')}&withDecryption=true"
        if label:
            query += f"&label={quote(label, safe='')}"
        return f"/systemsmanager/parameters/get?{query}"

    def _parameter_value(self, name: str, *, field: str | None, label: str | None) -> Reply:
        """A parameter's value (decrypted) as the body, like ``/value/`` answers for a secret."""
        reply = self.get(self._parameter_path(name, label))
        if reply.status != 200:
            return reply
        value = str(json.loads(reply.body).get("Parameter", {}).get("Value", ""))
        if field is None:
            return Reply(200, value.encode(), reply.headers)
        try:
            fields = json.loads(value)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            body = {
                "__type": "InvalidParameterException",
                "message": "parameter is not a JSON object; #field needs one",
            }
            return Reply(400, json.dumps(body).encode(), reply.headers)
        if field not in fields:
            body = {"__type": "FieldNotFoundException", "message": f"parameter has no field {field!r}"}
            return Reply(404, json.dumps(body).encode(), reply.headers)
        item = fields[field]
        return Reply(200, (item if isinstance(item, str) else json.dumps(item)).encode(), reply.headers)
