"""The Secrets Manager JSON protocol on ``POST /``, so unchanged AWS SDKs read through the agent.

An app sets ``AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:2773``, its
client name as ``AWS_ACCESS_KEY_ID`` and its token as ``AWS_SECRET_ACCESS_KEY``;
its SDK signs requests with SigV4 as it always does, and the guard middleware
verifies them (:func:`authenticate`, :mod:`agent.server.sigv4`). Reads are
served from the cache with the same policies, rate limits, audit and metrics
as the HTTP API:

- ``GetSecretValue`` (SecretId, VersionId, VersionStage);
- ``BatchGetSecretValue`` (SecretIdList; per-secret failures in ``Errors``);
- ``DescribeSecret`` (metadata from the last DescribeSecret, fetched when absent).

Other operations get the AWS-format error an SDK maps to an exception; write
operations are refused, never forwarded. Errors carry ``__type`` in the body
and ``x-amzn-ErrorType`` in the header (botocore reads the first, the
JavaScript SDK the second); client errors are 400 as in AWS, transient upstream
faults 5xx so SDKs retry them (:func:`error_response`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.access.audit import served
from agent.core.errors import (
    AgentError,
    Forbidden,
    RequestError,
    RequestTimeout,
    SerializationError,
    TooManyConnections,
    TooManyRequests,
    UnknownOperation,
    UpstreamError,
    ValidationError,
)
from agent.core.types import CURRENT, SecretValue, Selector
from agent.server import sdk_ssm
from agent.server.context import CACHE_KEY, CLIENT_KEY, COMPONENTS, DECISION_KEY, SECRET_ID_KEY, SERVED_KEY
from agent.server.sigv4 import SignedRequest, verify
from agent.upstream.source import BATCH_LIMIT, SecretMeta

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "secretsmanager."
READ_OPERATIONS = frozenset({"GetSecretValue", "BatchGetSecretValue", "DescribeSecret"})
WRITE_OPERATIONS = frozenset(
    {
        "CreateSecret",
        "PutSecretValue",
        "UpdateSecret",
        "UpdateSecretVersionStage",
        "DeleteSecret",
        "RestoreSecret",
        "RotateSecret",
        "CancelRotateSecret",
        "TagResource",
        "UntagResource",
        "PutResourcePolicy",
        "DeleteResourcePolicy",
        "ReplicateSecretToRegions",
        "RemoveRegionsFromReplication",
        "StopReplicationToReplica",
    }
)


def is_sdk_request(request: web.Request) -> bool:
    """``POST /`` with an X-Amz-Target: the SDK route."""
    return request.method == "POST" and request.path == "/" and "X-Amz-Target" in request.headers


# ----------------------------------------------------------------------------- errors


def _sdk_code_and_status(error: AgentError) -> tuple[str, int]:
    """What an SDK expects: 400 for client errors (throttling spelt as AWS does), 5xx only for transient faults."""
    if isinstance(error, TooManyRequests | TooManyConnections):
        return "ThrottlingException", 400
    if isinstance(error, UpstreamError) and error.transient and error.code != "ThrottlingException":
        return error.code, 503
    if isinstance(error, RequestError | UpstreamError):
        return error.code, 400
    return error.code, error.status


def error_response(error: AgentError) -> web.Response:
    """The AWS JSON-protocol error: ``__type`` in the body and ``x-amzn-ErrorType`` in the header."""
    code, status = _sdk_code_and_status(error)
    body = json.dumps({"__type": code, "message": error.message, "Message": error.message})
    return web.Response(status=status, text=body, content_type=CONTENT_TYPE, headers={"x-amzn-ErrorType": code})


# ----------------------------------------------------------------------------- authentication


def signed_request(request: web.Request, body: bytes) -> SignedRequest:
    """The view of an aiohttp request the verifier needs."""
    return SignedRequest(
        method=request.method,
        raw_path=request.raw_path,
        headers=request.headers,
        header_values=lambda name: list(request.headers.getall(name, [])),
        body=body,
    )


async def authenticate(request: web.Request, secret_for: Callable[[str], str | None], *, body_timeout: float) -> str:
    """Verify SigV4 over the body as received; the client name, or a :class:`~agent.core.errors.SignatureError`.

    A body that does not arrive within ``body_timeout`` is a 408 (connection closed).
    """
    try:
        body = await asyncio.wait_for(request.read(), body_timeout)  # kept: the handler reads the same bytes
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    return verify(signed_request(request, body), secret_for)


# ----------------------------------------------------------------------------- request and response shapes


def operation_of(request: web.Request) -> str:
    """``GetSecretValue`` from ``secretsmanager.GetSecretValue``; other services are refused."""
    target = request.headers.get("X-Amz-Target", "")
    if not target.startswith(TARGET_PREFIX):
        raise UnknownOperation(f"this endpoint serves Secrets Manager only, not {target!r}")
    operation = target[len(TARGET_PREFIX) :]
    if operation in WRITE_OPERATIONS:
        raise Forbidden(f"{operation} is refused: the agent serves reads only")
    if operation not in READ_OPERATIONS:
        raise UnknownOperation(f"{operation} is not supported by the agent")
    return operation


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON request body (an object), or a SerializationException."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise SerializationError("the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise SerializationError("the request body must be a JSON object")
    return data


def selector_of(params: dict[str, Any]) -> Selector:
    """VersionId / VersionStage from a request."""
    version_id, version_stage = params.get("VersionId"), params.get("VersionStage")
    for name, value in (("VersionId", version_id), ("VersionStage", version_stage)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(f"{name} must be a non-empty string")
    return Selector(version_id=version_id, version_stage=version_stage)


def secret_id_of(params: dict[str, Any], key: str = "SecretId") -> str:
    """The required SecretId."""
    secret_id = params.get(key)
    if not isinstance(secret_id, str) or not secret_id:
        raise ValidationError(f"1 validation error detected: {key} must not be null")
    return secret_id


def value_json(value: SecretValue) -> dict[str, Any]:
    """GetSecretValue's response shape: CreatedDate an epoch number, SecretBinary base64."""
    return value.aws_fields(created_as_string=False)


def describe_json(meta: SecretMeta) -> dict[str, Any]:
    """DescribeSecret's response shape."""
    body: dict[str, Any] = {
        "ARN": meta.arn,
        "Name": meta.name,
        "VersionIdsToStages": {version: list(stages) for version, stages in meta.versions_to_stages.items()},
        "Tags": [{"Key": k, "Value": v} for k, v in meta.tags.items()],
    }
    if meta.next_rotation is not None:
        body["NextRotationDate"] = meta.next_rotation
        body["RotationEnabled"] = True
    return body


# ----------------------------------------------------------------------------- the handler


async def sdk_endpoint(request: web.Request) -> web.Response:
    """``POST /``: one read operation, for a client the guard already verified and rate-limited."""
    if request.headers.get("X-Amz-Target", "").startswith(sdk_ssm.TARGET_PREFIX):
        return await sdk_ssm.ssm_endpoint(request)  # Parameter Store: GetParameter, GetParameters
    operation = operation_of(request)
    params = parse_body(await request.read())
    if operation == "GetSecretValue":
        reply = await _get(request, params)
    elif operation == "BatchGetSecretValue":
        reply = await _batch(request, params)
    else:
        reply = await _describe(request, params)
    return web.Response(text=json.dumps(reply), content_type=CONTENT_TYPE)


async def _get(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = secret_id_of(params)
    request[SECRET_ID_KEY] = secret_id
    selector = selector_of(params)
    lookup = await request.app[COMPONENTS].reader.read(request[CLIENT_KEY], secret_id, selector)
    request[DECISION_KEY] = "allow"
    request[CACHE_KEY] = lookup.outcome
    request[SERVED_KEY] = [served(lookup.value, selector)]
    return value_json(lookup.value)


async def _describe(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = secret_id_of(params)
    request[SECRET_ID_KEY] = secret_id
    meta = await request.app[COMPONENTS].reader.describe(request[CLIENT_KEY], secret_id)
    request[DECISION_KEY] = "allow"
    return describe_json(meta)


def filters_of(params: dict[str, Any]) -> list[dict[str, Any]]:
    """BatchGetSecretValue's ``Filters``, checked for shape (``[{"Key": str, "Values": [str, ...]}]``)."""
    filters = params.get("Filters")
    if not isinstance(filters, list) or not filters:
        raise ValidationError("Filters must be a non-empty list")
    for item in filters:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("Key"), str)
            or not isinstance(item.get("Values"), list)
            or not all(isinstance(value, str) for value in item["Values"])
        ):
            raise ValidationError('each filter needs a "Key" and a list of string "Values"')
    return filters


def page_size_of(params: dict[str, Any]) -> int:
    """``MaxResults`` for a filtered batch: 1..20, default 20."""
    size = params.get("MaxResults", BATCH_LIMIT)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= BATCH_LIMIT:
        raise ValidationError(f"MaxResults must be an integer 1..{BATCH_LIMIT}")
    return size


async def _batch(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    """BatchGetSecretValue by ``SecretIdList`` or by ``Filters`` (paginated as the API does).

    Filters are resolved upstream with the agent's credentials (one ListSecrets
    page); every secret found is then read like any other, through the cache and
    the caller's policies: a denied one is in ``Errors``, never in ``SecretValues``.
    """
    ids = params.get("SecretIdList")
    reader, client = request.app[COMPONENTS].reader, request[CLIENT_KEY]
    next_token: str | None = None
    if params.get("Filters") is not None:
        if ids:
            raise ValidationError("give either SecretIdList or Filters, not both")
        token = params.get("NextToken")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValidationError("NextToken must be a non-empty string")
        metas, next_token = await reader.list_page(filters_of(params), page_size_of(params), token)
        ids = [meta.name for meta in metas]
    elif not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValidationError("SecretIdList must be a non-empty list of secret ids")
    elif len(ids) > BATCH_LIMIT:
        raise ValidationError(f"SecretIdList holds at most {BATCH_LIMIT} ids")
    values: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    audited: list[dict[str, Any]] = []
    # Concurrently: with upstream slow, 20 misses cost one read deadline, not twenty.
    outcomes = await asyncio.gather(*(reader.read(client, i, CURRENT) for i in ids), return_exceptions=True)
    for secret_id, lookup in zip(ids, outcomes, strict=True):
        if isinstance(lookup, BaseException) and not isinstance(lookup, AgentError):
            raise lookup  # a bug, not an answer: the observe middleware logs it
        if isinstance(lookup, AgentError):
            errors.append({"SecretId": secret_id, "ErrorCode": lookup.code, "Message": lookup.message})
            decision = "deny" if lookup.status == 403 else "allow"
            audited.append({"secret_id": secret_id, "decision": decision, "status": lookup.status})
            continue
        values.append(value_json(lookup.value))
        item = {"secret_id": secret_id, **served(lookup.value, CURRENT), "decision": "allow", "status": 200}
        audited.append({**item, "cache": lookup.outcome})
    request[DECISION_KEY] = "allow"
    request[SERVED_KEY] = audited
    reply: dict[str, Any] = {"SecretValues": values, "Errors": errors}
    if next_token:
        reply["NextToken"] = next_token
    return reply
