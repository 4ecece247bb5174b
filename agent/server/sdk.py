"""The Secrets Manager JSON protocol on ``POST /``, so unchanged AWS SDKs read through the agent.

An app sets ``AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:2773``, its
client name as ``AWS_ACCESS_KEY_ID`` and its token as ``AWS_SECRET_ACCESS_KEY``;
its SDK signs requests with SigV4 as it always does, and the agent verifies
them (:mod:`agent.server.sigv4`). Reads are served from the cache with the same
policies, rate limits, audit and metrics as the HTTP API:

- ``GetSecretValue`` (SecretId, VersionId, VersionStage);
- ``BatchGetSecretValue`` (SecretIdList; per-secret failures in ``Errors``);
- ``DescribeSecret`` (metadata from the last DescribeSecret, fetched when absent).

Other operations get the AWS-format error an SDK maps to an exception; write
operations are refused, never forwarded. Errors carry ``__type`` in the body
and ``x-amzn-ErrorType`` in the header (botocore reads the first, the
JavaScript SDK the second); client errors are 400 as in AWS, transient upstream
faults 5xx so SDKs retry them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agent.core.errors import AgentError, UpstreamError
from agent.core.types import SecretValue, Selector
from agent.server.sigv4 import SignatureError, SignedRequest, verify

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
BATCH_LIMIT = 20


class SdkError(Exception):
    """An error in AWS JSON-protocol form."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def is_sdk_request(request: web.Request) -> bool:
    """``POST /`` with a ``secretsmanager.*`` X-Amz-Target: the SDK route."""
    return request.method == "POST" and request.path == "/" and "X-Amz-Target" in request.headers


def error_response(code: str, message: str, status: int = 400) -> web.Response:
    """The AWS JSON error: ``__type`` in the body and ``x-amzn-ErrorType`` in the header."""
    body = json.dumps({"__type": code, "message": message, "Message": message})
    return web.Response(status=status, text=body, content_type=CONTENT_TYPE, headers={"x-amzn-ErrorType": code})


def from_agent_error(error: AgentError) -> SdkError:
    """Map our errors to the status an SDK expects: 400 for client errors, 5xx only for transient faults."""
    if isinstance(error, UpstreamError) and error.transient and error.code != "ThrottlingException":
        return SdkError(error.code, error.message, 503)
    return SdkError(error.code, error.message, 400)


def value_json(value: SecretValue) -> dict[str, Any]:
    """GetSecretValue's response shape: CreatedDate an epoch number, SecretBinary base64."""
    return value.aws_fields(created_as_string=False)


def signed_request(request: web.Request, body: bytes) -> SignedRequest:
    """The view of an aiohttp request the verifier needs."""
    return SignedRequest(
        method=request.method,
        raw_path=request.raw_path,
        headers=request.headers,
        header_values=lambda name: list(request.headers.getall(name, [])),
        body=body,
    )


def authenticate(request: web.Request, body: bytes, secret_for: Any) -> str:
    """Verify SigV4 and return the client name, or raise :class:`SdkError`."""
    try:
        return verify(signed_request(request, body), secret_for)
    except SignatureError as exc:
        raise SdkError(exc.code, exc.message, 400) from exc


def operation_of(request: web.Request) -> str:
    """``GetSecretValue`` from ``secretsmanager.GetSecretValue``; other services are refused."""
    target = request.headers.get("X-Amz-Target", "")
    if not target.startswith(TARGET_PREFIX):
        raise SdkError("UnknownOperationException", f"this endpoint serves Secrets Manager only, not {target!r}")
    operation = target[len(TARGET_PREFIX) :]
    if operation in WRITE_OPERATIONS:
        raise SdkError("AccessDeniedException", f"{operation} is refused: the agent serves reads only")
    if operation not in READ_OPERATIONS:
        raise SdkError("UnknownOperationException", f"{operation} is not supported by the agent")
    return operation


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON request body (an object), or a ValidationException."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise SdkError("SerializationException", "the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise SdkError("SerializationException", "the request body must be a JSON object")
    return data


def selector_of(params: dict[str, Any]) -> Selector:
    """VersionId / VersionStage from a request."""
    version_id, version_stage = params.get("VersionId"), params.get("VersionStage")
    for name, value in (("VersionId", version_id), ("VersionStage", version_stage)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SdkError("ValidationException", f"{name} must be a non-empty string")
    return Selector(version_id=version_id, version_stage=version_stage)


def secret_id_of(params: dict[str, Any], key: str = "SecretId") -> str:
    """The required SecretId."""
    secret_id = params.get(key)
    if not isinstance(secret_id, str) or not secret_id:
        raise SdkError("ValidationException", f"1 validation error detected: {key} must not be null")
    return secret_id


def describe_json(meta: Any) -> dict[str, Any]:
    """DescribeSecret's response shape from a :class:`~agent.upstream.secretsmanager.SecretMeta`."""
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
