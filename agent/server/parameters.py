"""Parameter Store reads, as AWS's Parameters and Secrets Lambda Extension serves them.

``GET /systemsmanager/parameters/get?name=NAME[&version=N|&label=L][&withDecryption=true|false]``
answers GetParameter's JSON (``{"Parameter": {...}, "ResultMetadata": {}}``).
``NAME`` may be a name or an ARN and may carry the selector itself
(``name:3``, ``name:label``), as GetParameter takes it. A SecureString is
decrypted only with ``withDecryption=true``; otherwise the reply holds what
GetParameter returns with ``WithDecryption=false`` (the ciphertext).

Reads pass the same guards, identity, rate limits, audit and metrics as
secret reads (the middleware covers every route), and the same policies:
``[[clients]]`` ``allow``/``deny`` and ``[[secret_policies]]`` patterns are
matched against the parameter's name and ARN, first as asked (before any
upstream call) and then as Parameter Store names it.
"""

from __future__ import annotations

from aiohttp import web

from agent.access.policy import Policy
from agent.cache.parameters import ParameterCache, ParameterRefresher, ParamLookup
from agent.core.errors import BadRequest, Forbidden
from agent.core.metrics import Metrics
from agent.server.context import CACHE_KEY, CLIENT_KEY, COMPONENTS, DECISION_KEY, SECRET_ID_KEY, SERVED_KEY
from agent.server.reader import ACCESS_DENIED
from agent.server.reads import flag, single_params
from agent.upstream.ssm import split_selector

PARAMETER_PARAMS = frozenset({"name", "version", "label", "withDecryption"})


def parameter_ids(name: str) -> tuple[str, ...]:
    """Every identifier a policy pattern may match for a parameter asked as ``name`` (no selector)."""
    ids = [name]
    marker = name.find(":parameter/")
    if name.startswith("arn:") and marker >= 0:
        resource = name[marker + len(":parameter/") :]
        ids.extend((resource, "/" + resource))
    return tuple(dict.fromkeys(ids))


# Parameter Store's window onto Secrets Manager (and AWS's public parameters).
REFERENCE_PREFIX = "aws/reference/"


class ParameterReader:
    """Policy-checked parameter reads through the parameter cache, counted per client and decision."""

    def __init__(self, cache: ParameterCache, refresher: ParameterRefresher, policy: Policy, metrics: Metrics) -> None:
        self.cache = cache
        self.refresher = refresher
        self._policy = policy
        self._metrics = metrics

    def _check(self, client: str, ids: tuple[str, ...]) -> None:
        if self._policy.unrestricted(client):
            return
        if not self._policy.allows(client, ids):
            self._metrics.observe_read(client, "deny")
            raise Forbidden(ACCESS_DENIED)  # same body whether or not the parameter exists

    async def read(self, client: str, name: str, *, decrypt: bool) -> ParamLookup:
        """Early policy check on the name as asked, the cache read, then the check on the canonical name/ARN.

        ``/aws/reference/...`` names are refused: Parameter Store answers them with
        Secrets Manager secrets (or public parameters), which the secret policies,
        written on secret names, would never see here. Read secrets on their own routes.
        """
        if name.lstrip("/").lower().startswith(REFERENCE_PREFIX):
            raise BadRequest("/aws/reference/ names are not served here; read secrets on /secretsmanager/get")
        base, _selector = split_selector(name)
        self._check(client, parameter_ids(base))
        lookup = await self.cache.get(name, decrypt=decrypt)
        self._check(client, tuple(dict.fromkeys(i for i in (lookup.value.name, lookup.value.arn) if i)))
        self._metrics.observe_read(client, "allow")
        return lookup


def asked_name(params: dict[str, str]) -> str:
    """The GetParameter ``Name``: ``name`` plus ``:version`` or ``:label`` (one selector at most)."""
    name = params.get("name")
    if not name:
        raise BadRequest("missing required parameter: name")
    version, label = params.get("version"), params.get("label")
    if version is not None and label is not None:
        raise BadRequest("give version or label, not both")
    extra = version if version is not None else label
    if extra is None:
        return name
    if extra == "":
        raise BadRequest(f"{'version' if version is not None else 'label'} must not be empty")
    if version is not None and not version.isdigit():
        raise BadRequest("version must be a positive integer")
    if split_selector(name)[1] is not None:
        raise BadRequest("the name already carries a selector (name:version or name:label)")
    return f"{name}:{extra}"


async def get_parameter(request: web.Request) -> web.Response:
    """``/systemsmanager/parameters/get?name=...``: the Lambda-extension style parameter read."""
    params = single_params(request, PARAMETER_PARAMS)
    parts = request.app[COMPONENTS]
    if "name" in params:
        request[SECRET_ID_KEY] = params["name"]
    name = asked_name(params)
    decrypt = flag(params, "withDecryption")
    reader = parts.parameters
    if reader is None:  # only an app built by a test without Parameter Store
        raise BadRequest("Parameter Store reads are not configured")
    lookup = await reader.read(request[CLIENT_KEY], name, decrypt=decrypt)
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    if parts.audit.enabled:
        value = lookup.value
        _base, selector = split_selector(name)
        request[SERVED_KEY] = [
            {
                "kind": "parameter",
                "name": value.name,
                "arn": value.arn,
                "version_id": str(value.version),
                "version_stage": selector,
                "decrypted": decrypt,
            }
        ]
    headers = {"X-Cache": lookup.outcome, "Age": str(int(lookup.age))}
    if lookup.outcome == "stale":
        headers["X-Cache-Stale"] = "true"
    return web.Response(body=lookup.value.wire_json, content_type="application/json", headers=headers)
