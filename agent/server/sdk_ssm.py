"""Parameter Store's JSON protocol on ``POST /`` (``X-Amz-Target: AmazonSSM.*``), beside Secrets Manager's.

An app sets ``AWS_ENDPOINT_URL_SSM=http://127.0.0.1:2773`` and the same
credentials as for Secrets Manager (client name, token); its SDK signs with
SigV4 for service ``ssm`` and the guard verifies it. Served from the parameter
cache under the same policies, rate limits, audit and metrics as
``/systemsmanager/parameters/get``:

- ``GetParameter`` (Name, with ``:version`` or ``:label``; WithDecryption);
- ``GetParameters`` (Names, at most 10; missing ones in ``InvalidParameters``;
  a name the client may not read refuses the whole call, as IAM does).

Any other operation is refused (writes never forwarded). Errors use the JSON
protocol's form (:func:`agent.server.sdk.error_response`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from agent.core.errors import AgentError, Forbidden, SecretNotFound, UnknownOperation, ValidationError
from agent.core.types import parse_rfc3339
from agent.server.context import CACHE_KEY, CLIENT_KEY, COMPONENTS, DECISION_KEY, SECRET_ID_KEY, SERVED_KEY
from agent.server.parameters import ParameterReader
from agent.upstream.ssm import GET_PARAMETERS_LIMIT, ParameterValue, split_selector

TARGET_PREFIX = "AmazonSSM."
CONTENT_TYPE = "application/x-amz-json-1.1"
READ_OPERATIONS = frozenset({"GetParameter", "GetParameters"})


def parameter_json(value: ParameterValue) -> dict[str, Any]:
    """A ``Parameter`` as the JSON protocol sends it: LastModifiedDate as epoch seconds."""
    fields = value.aws_fields()
    if value.last_modified is not None:
        fields["LastModifiedDate"] = parse_rfc3339(value.last_modified)
    return fields


def _decrypt(params: dict[str, Any]) -> bool:
    flag = params.get("WithDecryption", False)
    if not isinstance(flag, bool):
        raise ValidationError("WithDecryption must be a boolean")
    return flag


def _served(value: ParameterValue, name: str, decrypt: bool) -> dict[str, Any]:
    return {
        "kind": "parameter",
        "name": value.name,
        "arn": value.arn,
        "version_id": str(value.version),
        "version_stage": split_selector(name)[1],
        "decrypted": decrypt,
    }


def _reader(request: web.Request) -> ParameterReader:
    reader = request.app[COMPONENTS].parameters
    if reader is None:
        raise UnknownOperation("Parameter Store is not served by this agent")
    return reader


async def ssm_endpoint(request: web.Request) -> web.Response:
    """One Parameter Store read operation, for a client the guard already verified and rate-limited."""
    from agent.server.sdk import parse_body  # the Secrets Manager module imports this one

    operation = request.headers.get("X-Amz-Target", "")[len(TARGET_PREFIX) :]
    if operation not in READ_OPERATIONS:
        raise UnknownOperation(f"{operation} is not supported by the agent (GetParameter and GetParameters are)")
    params = parse_body(await request.read())
    reply = await (_get(request, params) if operation == "GetParameter" else _get_many(request, params))
    return web.Response(text=json.dumps(reply), content_type=CONTENT_TYPE)


async def _get(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("Name")
    if not isinstance(name, str) or not name:
        raise ValidationError("1 validation error detected: Name must not be null")
    request[SECRET_ID_KEY] = name
    decrypt = _decrypt(params)
    lookup = await _reader(request).read(request[CLIENT_KEY], name, decrypt=decrypt)
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    request[SERVED_KEY] = [_served(lookup.value, name, decrypt)]
    return {"Parameter": parameter_json(lookup.value)}


async def _get_many(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    names = params.get("Names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValidationError("Names must be a non-empty list of parameter names")
    if len(names) > GET_PARAMETERS_LIMIT:
        raise ValidationError(f"Names holds at most {GET_PARAMETERS_LIMIT} names")
    decrypt = _decrypt(params)
    reader, client = _reader(request), request[CLIENT_KEY]
    request[SECRET_ID_KEY] = ",".join(names)
    outcomes = await asyncio.gather(*(reader.read(client, n, decrypt=decrypt) for n in names), return_exceptions=True)
    values: list[dict[str, Any]] = []
    invalid: list[str] = []
    audited: list[dict[str, Any]] = []
    failure: AgentError | None = None
    for name, lookup in zip(names, outcomes, strict=True):
        if isinstance(lookup, BaseException) and not isinstance(lookup, AgentError):
            raise lookup  # a bug, not an answer: the observe middleware logs it
        if isinstance(lookup, SecretNotFound):
            invalid.append(name)
            audited.append({"secret_id": name, "decision": "allow", "status": 404})
        elif isinstance(lookup, AgentError):
            if isinstance(lookup, Forbidden) or failure is None:
                failure = lookup  # a denial wins: the whole call is refused, as IAM refuses it
            audited.append({"secret_id": name, "decision": "deny" if lookup.status == 403 else "allow"})
        else:
            values.append(parameter_json(lookup.value))
            audited.append({"secret_id": name, **_served(lookup.value, name, decrypt), "decision": "allow"})
    request[SERVED_KEY] = audited
    if failure is not None:
        raise failure
    request[DECISION_KEY] = "allow"
    return {"Parameters": values, "InvalidParameters": invalid}
