"""The HTTP read routes: AWS-agent compatible JSON reads and the plain-value read.

- ``GET /secretsmanager/get?secretId=&versionId=&versionStage=&refreshNow=``
- ``GET /v1/<secretId>`` (the id may contain ``/``), same query parameters
- ``GET /value/<secretId>[?field=KEY]``: the value itself as the body

Each also takes ``roleArn``: the read is made as that IAM role, through its
own cache (:mod:`agent.server.roles`).

The first two answer with the GetSecretValue JSON shape, rendered once per
cached version (:attr:`~agent.core.types.SecretValue.wire_json`).
"""

from __future__ import annotations

import json

from aiohttp import web

from agent.access.audit import served
from agent.cache.store import Lookup
from agent.core.errors import BadRequest, FieldNotFound
from agent.core.types import CURRENT, Selector
from agent.server.context import CACHE_KEY, CLIENT_KEY, COMPONENTS, DECISION_KEY, ROLE_KEY, SECRET_ID_KEY, SERVED_KEY
from agent.upstream.roles import valid_role_arn

READ_PARAMS = frozenset({"versionId", "versionStage", "refreshNow", "roleArn"})


def single_params(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters as a dict; unknown or repeated ones are a 400 naming them."""
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            raise BadRequest(f"unknown query parameter: {name}")
        if name in params:
            raise BadRequest(f"query parameter given more than once: {name}")
        params[name] = value
    return params


def flag(params: dict[str, str], name: str) -> bool:
    """A ``true``/``false`` query parameter (case-insensitive); absent is false, anything else a 400."""
    raw = params.get(name)
    if raw is None:
        return False
    low = raw.lower()
    if low not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return low == "true"


def refresh_flag(params: dict[str, str]) -> bool:
    """``refreshNow``."""
    return flag(params, "refreshNow")


def selector_of(params: dict[str, str]) -> Selector:
    """``versionId`` / ``versionStage``; given but empty is a 400."""
    version_id = params.get("versionId")
    version_stage = params.get("versionStage")
    if version_id == "":
        raise BadRequest("versionId must not be empty")
    if version_stage == "":
        raise BadRequest("versionStage must not be empty")
    if version_id is None and version_stage is None:
        return CURRENT  # the common read: one shared (frozen) selector, not a new one each time
    return Selector(version_id=version_id, version_stage=version_stage)


async def _read(request: web.Request, secret_id: str, params: dict[str, str]) -> Lookup:
    if not secret_id:
        raise BadRequest("missing required parameter: secretId")
    request[SECRET_ID_KEY] = secret_id
    parts = request.app[COMPONENTS]
    selector = selector_of(params)
    refresh = refresh_flag(params)
    caches = None
    role_arn = params.get("roleArn")
    if role_arn is not None:  # read as that role, through its own cache (see agent.server.roles)
        if valid_role_arn(role_arn):  # audited and logged only when well-formed, never arbitrary caller text
            request[ROLE_KEY] = role_arn
        if parts.roles is None:
            raise BadRequest("roleArn reads are not available in this agent")
        caches = await parts.roles.caches_for(request[CLIENT_KEY], role_arn)
    lookup = await parts.reader.read(request[CLIENT_KEY], secret_id, selector, refresh=refresh, caches=caches)
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    if parts.audit.enabled:
        request[SERVED_KEY] = [served(lookup.value, selector)]
    return lookup


def cache_headers(lookup: Lookup) -> dict[str, str]:
    """``X-Cache`` (hit, miss, refresh, revalidated, stale) and ``Age`` (seconds since upstream confirmed)."""
    headers = {"X-Cache": lookup.outcome, "Age": str(int(lookup.age))}
    if lookup.outcome == "stale":
        headers["X-Cache-Stale"] = "true"
    return headers


def _json_response(lookup: Lookup) -> web.Response:
    return web.Response(body=lookup.value.wire_json, content_type="application/json", headers=cache_headers(lookup))


async def get_query(request: web.Request) -> web.Response:
    """``/secretsmanager/get?secretId=...``: the Lambda-extension style read."""
    params = single_params(request, READ_PARAMS | {"secretId"})
    if "secretId" not in params:
        raise BadRequest("missing required parameter: secretId")
    return _json_response(await _read(request, params["secretId"], params))


async def get_path(request: web.Request) -> web.Response:
    """``/v1/<secretId>``: the path style read."""
    params = single_params(request, READ_PARAMS)
    return _json_response(await _read(request, request.match_info["secret_id"], params))


async def get_value(request: web.Request) -> web.Response:
    """``/value/<secretId>[?field=KEY]``: the value itself as the body."""
    params = single_params(request, READ_PARAMS | {"field"})
    lookup = await _read(request, request.match_info["secret_id"], params)
    value = lookup.value
    headers = cache_headers(lookup)
    field = params.get("field")
    if field is None:
        if value.secret_binary is not None:
            return web.Response(body=value.secret_binary, content_type="application/octet-stream", headers=headers)
        return web.Response(text=value.secret_string or "", content_type="text/plain", headers=headers)
    fields = value.json_fields
    if fields is None:
        raise BadRequest("secret is not a JSON object; ?field= needs one")
    if field not in fields:
        raise FieldNotFound(f"secret has no field {field!r}")
    item = fields[field]
    text = item if isinstance(item, str) else json.dumps(item)
    return web.Response(text=text, content_type="text/plain", headers=headers)
