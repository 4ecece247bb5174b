"""The aiohttp application: routes, handlers and typed app state.

Reads (AWS-agent compatible):

- ``GET /secretsmanager/get?secretId=&versionId=&versionStage=&refreshNow=``
- ``GET /v1/<secretId>`` (the id may contain ``/``), same query parameters

Both answer with the GetSecretValue JSON shape. ``GET /value/<secretId>``
answers with the value itself (``?field=KEY`` for one key of a JSON secret).
Health: ``/ping``, ``/healthz``, ``/readyz``; ``/metrics`` for Prometheus.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.access.audit import AuditLog, served
from agent.access.identity import Authenticator, RateLimiter
from agent.access.policy import Policy, canonical_ids, subject_ids
from agent.cache.refresher import Refresher
from agent.cache.store import Lookup, SecretCache
from agent.core.errors import AgentError, BadRequest, Forbidden, NotFound
from agent.core.log import get_logger
from agent.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.core.metrics import Metrics
from agent.core.types import CURRENT, Selector
from agent.delivery.notify import Notifier
from agent.server import sdk
from agent.server.middleware import (
    CACHE_KEY,
    CLIENT_KEY,
    DECISION_KEY,
    SECRET_ID_KEY,
    SERVED_KEY,
    ConnectionLimiter,
    guard_middleware,
    observe_middleware,
)
from agent.upstream.events import EventListener
from agent.upstream.throttle import AttemptPacer

if TYPE_CHECKING:  # for typing only: Jinja2 is loaded only when templates are configured
    from agent.delivery.templates import TemplateRenderer


@dataclass
class Components:
    """What the handlers need; built by the runner (or a test) and handed in."""

    cache: SecretCache
    refresher: Refresher
    auth: Authenticator
    metrics: Metrics
    limiter: ConnectionLimiter
    metrics_public: bool = False
    events: EventListener | None = None
    pacer: AttemptPacer | None = None
    policy: Policy = field(default_factory=lambda: Policy((), ()))
    rates: RateLimiter = field(default_factory=lambda: RateLimiter(()))
    audit: AuditLog | None = None
    templates: TemplateRenderer | None = None
    notifier: Notifier | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


COMPONENTS = web.AppKey("components", Components)
log = get_logger("agent.server.app")
ACCESS_DENIED = "access to this secret is denied"

_READ_PARAMS = frozenset({"versionId", "versionStage", "refreshNow"})


def _single_params(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters as a dict; unknown or repeated ones are a 400 naming them."""
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            raise BadRequest(f"unknown query parameter: {name}")
        if name in params:
            raise BadRequest(f"query parameter given more than once: {name}")
        params[name] = value
    return params


def _refresh_flag(params: dict[str, str]) -> bool:
    raw = params.get("refreshNow")
    if raw is None:
        return False
    low = raw.lower()
    if low not in ("true", "false"):
        raise BadRequest("refreshNow must be true or false")
    return low == "true"


def _selector(params: dict[str, str]) -> Selector:
    version_id = params.get("versionId")
    version_stage = params.get("versionStage")
    if version_id == "":
        raise BadRequest("versionId must not be empty")
    if version_stage == "":
        raise BadRequest("versionStage must not be empty")
    return Selector(version_id=version_id, version_stage=version_stage)


async def _read(request: web.Request, secret_id: str, params: dict[str, str]) -> Lookup:
    if not secret_id:
        raise BadRequest("missing required parameter: secretId")
    request[SECRET_ID_KEY] = secret_id
    parts = request.app[COMPONENTS]
    selector = _selector(params)
    lookup = await authorized_get(parts, request[CLIENT_KEY], secret_id, selector, refresh=_refresh_flag(params))
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    if parts.audit is not None and parts.audit.enabled:
        request[SERVED_KEY] = [served(lookup.value, selector)]
    return lookup


def authorize(parts: Components, client: str, secret_id: str) -> None:
    """Raise Forbidden unless ``client`` may read ``secret_id``; decided without any upstream call."""
    if parts.policy.unrestricted(client):
        return
    arn = parts.cache.resolve(secret_id)
    ids = subject_ids(secret_id, arn=arn, name=parts.cache.name_of(arn) if arn else None)
    if not parts.policy.allows(client, ids):
        parts.metrics.observe_read(client, "deny")
        raise Forbidden(ACCESS_DENIED)  # same body whether or not the secret exists


def authorize_canonical(parts: Components, client: str, *, arn: str, name: str) -> None:
    """The final decision, on the secret's own name and ARN (never on what the caller typed)."""
    if parts.policy.unrestricted(client):
        return
    if not parts.policy.allows(client, canonical_ids(arn=arn, name=name)):
        parts.metrics.observe_read(client, "deny")
        raise Forbidden(ACCESS_DENIED)


async def authorized_get(
    parts: Components, client: str, secret_id: str, selector: Selector, *, refresh: bool = False
) -> Lookup:
    """Early policy check (no upstream call when denied), the cache read, then the canonical check."""
    authorize(parts, client, secret_id)
    lookup = await parts.cache.get(secret_id, selector, refresh=refresh)
    authorize_canonical(parts, client, arn=lookup.value.arn, name=lookup.value.name)
    parts.metrics.observe_read(client, "allow")
    return lookup


async def sdk_endpoint(request: web.Request) -> web.Response:
    """``POST /``: the Secrets Manager JSON protocol for unchanged AWS SDKs (see :mod:`agent.server.sdk`)."""
    parts = request.app[COMPONENTS]
    try:
        body = await request.read()
        try:
            client = sdk.authenticate(request, body, parts.auth.secret_for)
        except sdk.SdkError as exc:
            reason = "unknown_key" if exc.code == "UnrecognizedClientException" else "bad_signature"
            parts.metrics.auth_failures.labels(reason).inc()
            raise
        request[CLIENT_KEY] = client
        if not parts.rates.allow(client):
            parts.metrics.rate_limited.labels(client).inc()
            raise sdk.SdkError("ThrottlingException", "client rate limit exceeded")
        operation = sdk.operation_of(request)
        params = sdk.parse_body(body)
        if operation == "GetSecretValue":
            reply = await _sdk_get(request, parts, client, params)
        elif operation == "BatchGetSecretValue":
            reply = await _sdk_batch(request, parts, client, params)
        else:
            secret_id = sdk.secret_id_of(params)
            request[SECRET_ID_KEY] = secret_id
            authorize(parts, client, secret_id)
            meta = await parts.cache.describe(secret_id)
            authorize_canonical(parts, client, arn=meta.arn, name=meta.name)
            request[DECISION_KEY] = "allow"
            reply = sdk.describe_json(meta)
    except sdk.SdkError as exc:
        return sdk.error_response(exc.code, exc.message, exc.status)
    except AgentError as exc:
        error = sdk.from_agent_error(exc)
        return sdk.error_response(error.code, error.message, error.status)
    return web.Response(text=json.dumps(reply), content_type=sdk.CONTENT_TYPE)


async def _sdk_get(request: web.Request, parts: Components, client: str, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = sdk.secret_id_of(params)
    request[SECRET_ID_KEY] = secret_id
    selector = sdk.selector_of(params)
    lookup = await authorized_get(parts, client, secret_id, selector)
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    request[SERVED_KEY] = [served(lookup.value, selector)]
    return sdk.value_json(lookup.value)


async def _sdk_batch(request: web.Request, parts: Components, client: str, params: dict[str, Any]) -> dict[str, Any]:
    ids = params.get("SecretIdList")
    if params.get("Filters"):
        raise sdk.SdkError("ValidationException", "Filters are not supported by the agent; pass SecretIdList")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise sdk.SdkError("ValidationException", "SecretIdList must be a non-empty list of secret ids")
    if len(ids) > sdk.BATCH_LIMIT:
        raise sdk.SdkError("ValidationException", f"SecretIdList holds at most {sdk.BATCH_LIMIT} ids")
    values: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    audited: list[dict[str, Any]] = []
    for secret_id in ids:
        try:
            lookup = await authorized_get(parts, client, secret_id, CURRENT)
        except AgentError as exc:
            errors.append({"SecretId": secret_id, "ErrorCode": exc.code, "Message": exc.message})
            decision = "deny" if exc.status == 403 else "allow"
            audited.append({"secret_id": secret_id, "decision": decision, "status": exc.status})
            continue
        values.append(sdk.value_json(lookup.value))
        item = {"secret_id": secret_id, **served(lookup.value, CURRENT), "decision": "allow", "status": 200}
        audited.append({**item, "cache": lookup.outcome})
    request[DECISION_KEY] = "allow"
    request[SERVED_KEY] = audited
    return {"SecretValues": values, "Errors": errors}


def _cache_headers(lookup: Lookup) -> dict[str, str]:
    """``X-Cache`` (hit, miss, refresh, revalidated, stale) and ``Age`` (seconds since upstream confirmed)."""
    headers = {"X-Cache": lookup.outcome, "Age": str(int(lookup.age))}
    if lookup.outcome == "stale":
        headers["X-Cache-Stale"] = "true"
    return headers


def _json_response(lookup: Lookup) -> web.Response:
    return web.Response(body=lookup.value.wire_json, content_type="application/json", headers=_cache_headers(lookup))


async def get_query(request: web.Request) -> web.Response:
    """``/secretsmanager/get?secretId=...``: the Lambda-extension style read."""
    params = _single_params(request, _READ_PARAMS | {"secretId"})
    if "secretId" not in params:
        raise BadRequest("missing required parameter: secretId")
    return _json_response(await _read(request, params["secretId"], params))


async def get_path(request: web.Request) -> web.Response:
    """``/v1/<secretId>``: the path style read."""
    params = _single_params(request, _READ_PARAMS)
    return _json_response(await _read(request, request.match_info["secret_id"], params))


async def get_value(request: web.Request) -> web.Response:
    """``/value/<secretId>[?field=KEY]``: the value itself as the body."""
    params = _single_params(request, _READ_PARAMS | {"field"})
    lookup = await _read(request, request.match_info["secret_id"], params)
    value = lookup.value
    headers = _cache_headers(lookup)
    field = params.get("field")
    if field is None:
        if value.secret_binary is not None:
            return web.Response(body=value.secret_binary, content_type="application/octet-stream", headers=headers)
        return web.Response(text=value.secret_string or "", content_type="text/plain", headers=headers)
    fields = value.json_fields
    if fields is None:
        raise BadRequest("secret is not a JSON object; ?field= needs one")
    if field not in fields:
        error = NotFound(f"secret has no field {field!r}")
        error.code = "FieldNotFoundException"
        raise error
    item = fields[field]
    text = item if isinstance(item, str) else json.dumps(item)
    return web.Response(text=text, content_type="text/plain", headers=headers)


async def ping(_request: web.Request) -> web.Response:
    """AWS-agent health check."""
    return web.Response(text="healthy")


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: prefetch and first template render done, no prefetched secret past the stale bound."""
    parts = request.app[COMPONENTS]
    if not parts.started.is_set():
        return web.Response(status=503, text="not ready: prefetch in progress")
    ready, reason = await parts.refresher.ready()
    if ready and parts.templates is not None and not parts.templates.all_rendered:
        ready, reason = False, "a template has not rendered yet"
    return web.Response(status=200 if ready else 503, text=reason if ready else f"not ready: {reason}")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    parts = request.app[COMPONENTS]
    parts.metrics.cache_entries.set(len(parts.cache))
    response = web.Response(body=parts.metrics.render(await parts.cache.ages()))
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


async def _startup(parts: Components) -> None:
    """Prefetch, then the first template render, then readiness (and READY=1 to systemd)."""
    await parts.refresher.prefetched.wait()
    if parts.templates is not None:
        await parts.templates.render_all()
    parts.started.set()
    if parts.notifier is not None:
        parts.notifier.ready()


def _background_ctx(parts: Components) -> Callable[[web.Application], AsyncIterator[None]]:
    async def background(_app: web.Application) -> AsyncIterator[None]:
        # Serving starts at once (misses fetch on demand); /readyz waits for prefetch.
        tasks = [
            asyncio.create_task(parts.refresher.run(), name="refresher"),
            asyncio.create_task(_startup(parts), name="startup"),
        ]
        if parts.events is not None:
            tasks.append(asyncio.create_task(parts.events.run(), name="events"))
        if parts.notifier is not None:
            tasks.append(asyncio.create_task(parts.notifier.watchdog(), name="watchdog"))
        yield
        if parts.notifier is not None:
            parts.notifier.stopping()
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a task that died must not stop the rest of shutdown
                log.exception("background_task_failed", task=task.get_name())
        if parts.templates is not None:
            await parts.templates.close()

    return background


def create_app(parts: Components) -> web.Application:
    """Build the application around already-constructed components."""
    app = web.Application(
        middlewares=[
            observe_middleware(parts.metrics, parts.audit),
            guard_middleware(
                parts.limiter, parts.auth, parts.rates, parts.metrics, metrics_public=parts.metrics_public
            ),
        ],
    )
    app[COMPONENTS] = parts
    app.router.add_get("/secretsmanager/get", get_query, name="get")
    app.router.add_get("/v1/{secret_id:.+}", get_path, name="v1")
    app.router.add_get("/value/{secret_id:.+}", get_value, name="value")
    app.router.add_get("/ping", ping, name="ping")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_post("/", sdk_endpoint, name="sdk")
    app.cleanup_ctx.append(_background_ctx(parts))
    return app
