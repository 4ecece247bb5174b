"""What handlers and middleware share: the typed app state and the per-request keys.

:class:`Components` holds exactly what request handling needs. Collaborators
production always has are required; the two that are optional really are
(templates exist only when ``[[templates]]`` is configured).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from agent.access.audit import AuditLog
from agent.access.identity import Authenticator, Peer, RateLimiter
from agent.cache.refresher import Refresher
from agent.cache.store import SecretCache
from agent.cache.watch import RotationWatch
from agent.core.metrics import Metrics
from agent.server.connections import ConnectionGuard
from agent.server.reader import SecretReader
from agent.server.requestlog import RequestLog
from agent.server.roles import RoleRegistry
from agent.upstream.health import UpstreamHealth

if TYPE_CHECKING:  # for typing only: Jinja2 is loaded only when templates are configured
    from agent.delivery.templates import TemplateRenderer
    from agent.server.parameters import ParameterReader


@dataclass
class Components:
    """The collaborators request handling needs; built by :mod:`agent.server.lifecycle` (or a test)."""

    cache: SecretCache
    refresher: Refresher
    reader: SecretReader
    auth: Authenticator
    rates: RateLimiter
    metrics: Metrics
    connections: ConnectionGuard
    audit: AuditLog
    watch: RotationWatch  # rotation history, health and read usage (/status)
    body_timeout_seconds: float
    # Host values accepted on TCP besides loopback ones; None: any (bound to every address).
    allowed_hosts: frozenset[str] | None = frozenset()
    metrics_public: bool = False
    path_prefix: str = "/v1/"  # server.path_prefix: where GET <prefix><id> answers
    templates: TemplateRenderer | None = None
    # Parameter Store reads (/systemsmanager/parameters/get); None in apps built without them.
    parameters: ParameterReader | None = None
    roles: RoleRegistry | None = None  # roleArn reads; None: refused
    # Request accounting (log lines, summaries, request metrics); None: made by create_app, one line per request.
    request_log: RequestLog | None = None
    # Set once prefetch and the first template render are done (readiness, READY=1).
    started: asyncio.Event = field(default_factory=asyncio.Event)
    upstream: UpstreamHealth = field(default_factory=UpstreamHealth)
    started_at: float = field(default_factory=time.time)  # wall clock, for /status uptime


COMPONENTS = web.AppKey("components", Components)

CLIENT_KEY = web.RequestKey("client", str)
SECRET_ID_KEY = web.RequestKey("secret_id", str)
CACHE_KEY = web.RequestKey("cache", str)
PEER_KEY = web.RequestKey("peer", Peer)
DECISION_KEY = web.RequestKey("decision", str)
ROLE_KEY = web.RequestKey("role_arn", str)  # the roleArn a read named (audited and logged)
# Set by the guard once it takes a request as an SDK call (POST / with X-Amz-Target).
SDK_KEY = web.RequestKey("sdk", bool)
# One dict per secret read (name, arn, version_id, version_stage; for batches also decision/status).
SERVED_KEY = web.RequestKey("served", list)
