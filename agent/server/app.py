"""The aiohttp application: middleware and routes around already-built components.

Every route answers on both listeners (TCP and the Unix socket):

==============================  =========================================
``GET /secretsmanager/get``     GetSecretValue JSON (:mod:`.reads`)
``GET /v1/<id>``                the same, id in the path (``server.path_prefix``)
``GET /value/<id>``             the value itself
``GET /systemsmanager/...``     Parameter Store: GetParameter JSON (:mod:`.parameters`)
``GET /ping|/healthz|/readyz``  health (:mod:`.health`), no token
``GET /ui`` (and its assets)    the rotation-timeline page (:mod:`.ui`), no token
``GET /metrics``                Prometheus text
``GET /status``                 rotations, health and readers (:mod:`.status`)
``POST /``                      the Secrets Manager JSON protocol (:mod:`.sdk`)
==============================  =========================================

Background work (prefetch, polling, events) is owned by the lifecycle
(:mod:`.lifecycle`), not by the app, so a test can serve an app built around
a fake source without any of it.
"""

from __future__ import annotations

from aiohttp import web

from agent.server import health, parameters, reads, sdk, status, ui
from agent.server.context import COMPONENTS, Components
from agent.server.middleware import guard_middleware, observe_middleware
from agent.server.requestlog import RequestLog


def create_app(parts: Components) -> web.Application:
    """Build the application around ``parts``."""
    if parts.request_log is None:
        parts.request_log = RequestLog(parts.metrics)
    app = web.Application(
        middlewares=[
            observe_middleware(parts.request_log, parts.audit, parts.connections),
            guard_middleware(parts),
        ],
    )
    app[COMPONENTS] = parts
    app.router.add_get("/secretsmanager/get", reads.get_query, name="get")
    app.router.add_get(parts.path_prefix + "{secret_id:.+}", reads.get_path, name="v1")  # "v1": the label kept
    app.router.add_get("/value/{secret_id:.+}", reads.get_value, name="value")
    app.router.add_get("/systemsmanager/parameters/get", parameters.get_parameter, name="parameter")
    app.router.add_get("/ping", health.ping, name="ping")
    app.router.add_get("/healthz", health.healthz, name="healthz")
    app.router.add_get("/readyz", health.readyz, name="readyz")
    app.router.add_get("/metrics", health.metrics, name="metrics")
    app.router.add_get("/status", status.status, name="status")
    app.router.add_post("/", sdk.sdk_endpoint, name="sdk")
    ui.add_routes(app)
    return app
