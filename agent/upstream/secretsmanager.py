"""Where secrets come from: the :class:`SecretSource` seam and its AWS implementation.

Every boto3 call runs in a bounded thread pool (boto3 is blocking; the event
loop must never wait on it) against one shared, thread-safe client. botocore
exceptions stop here: :func:`translate` turns each into one of ours from
:mod:`agent.core.errors`, so callers reason about ``transient`` and HTTP status,
never about botocore classes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from agent.core.errors import (
    SecretNotFound,
    UpstreamDenied,
    UpstreamError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from agent.core.log import get_logger
from agent.core.types import AWSCURRENT, SecretValue, Selector

log = get_logger("agent.upstream.secretsmanager")

BATCH_LIMIT = 20  # BatchGetSecretValue's documented maximum SecretIdList length
LIST_PAGE_SIZE = 100  # ListSecrets' documented maximum MaxResults

_THROTTLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})
_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)

T = TypeVar("T")
CallObserver = Callable[[str, str, bool], None]  # (operation, "ok" or error code, transient)


@dataclass(frozen=True)
class SecretMeta:
    """What ListSecrets/DescribeSecret say about a secret, without its value."""

    arn: str
    name: str
    versions_to_stages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    next_rotation: float | None = None
    deleted: bool = False

    def version_for_stage(self, stage: str) -> str | None:
        """The version id that carries ``stage``, if any."""
        for version, stages in self.versions_to_stages.items():
            if stage in stages:
                return version
        return None

    @property
    def current_version(self) -> str | None:
        """The version id that carries ``AWSCURRENT``, if known."""
        return self.version_for_stage(AWSCURRENT)


@dataclass
class BatchResult:
    """Values fetched, and per-id failures (id as asked → error)."""

    values: list[SecretValue] = field(default_factory=list)
    errors: dict[str, UpstreamError] = field(default_factory=dict)


class SecretSource(Protocol):
    """What the cache and refresher need from upstream."""

    async def get_secret_value(self, secret_id: str, selector: Selector) -> SecretValue:
        """Fetch one version of one secret."""
        ...

    async def batch_get(self, secret_ids: Sequence[str]) -> BatchResult:
        """Fetch the current version of many secrets, in as few calls as allowed."""
        ...

    async def list_secrets(
        self,
        name_prefixes: Sequence[str] = (),
        tag_keys: Sequence[str] = (),
        *,
        until: Callable[[dict[str, SecretMeta]], bool] | None = None,
    ) -> list[SecretMeta]:
        """List secrets (metadata only) matching any of the prefixes or tag keys.

        ``until`` stops paging early once it returns True for what was seen.
        """
        ...

    async def describe(self, secret_id: str) -> SecretMeta:
        """DescribeSecret: one secret's metadata (stages, rotation, deletion)."""
        ...

    def close(self) -> None:
        """Release threads and connections."""
        ...


def translate(exc: Exception, secret_id: str | None = None) -> UpstreamError:
    """Map a botocore exception to the agent's error tree."""
    about = f" for secret {secret_id!r}" if secret_id else ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        message = str(error.get("Message") or code)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ResourceNotFoundException":
            return SecretNotFound(message, code=code)
        if code in _THROTTLE_CODES or status == 429:
            return UpstreamThrottled(message, code="ThrottlingException")
        if code in _DENIED_CODES:
            return UpstreamDenied(message, code=code)
        if status >= 500 or code in ("InternalServiceError", "InternalFailure", "ServiceUnavailable"):
            return UpstreamUnavailable(f"Secrets Manager error{about}: {message}", code=code)
        return UpstreamRejected(message, code=code)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return UpstreamTimeout(f"Secrets Manager did not answer in time{about}")
    if isinstance(exc, NoCredentialsError):
        return UpstreamUnavailable("AWS credentials are unavailable", code="CredentialsUnavailable")
    if isinstance(exc, ParamValidationError):
        return UpstreamRejected(f"invalid parameter{about}: {exc}", code="InvalidParameterException")
    if isinstance(exc, BotoCoreError):
        return UpstreamUnavailable(f"cannot reach Secrets Manager{about}: {type(exc).__name__}")
    return UpstreamUnavailable(f"unexpected upstream failure{about}: {type(exc).__name__}")


def value_from_response(reply: dict[str, Any]) -> SecretValue:
    """Build a :class:`SecretValue` from a GetSecretValue-shaped dict."""
    created = reply.get("CreatedDate")
    return SecretValue(
        arn=reply["ARN"],
        name=reply["Name"],
        version_id=reply["VersionId"],
        version_stages=tuple(reply.get("VersionStages") or ()),
        created_date=created.timestamp() if created is not None else None,
        secret_string=reply.get("SecretString"),
        secret_binary=reply.get("SecretBinary"),
    )


def meta_from_entry(entry: dict[str, Any]) -> SecretMeta:
    """Build a :class:`SecretMeta` from a ListSecrets entry or DescribeSecret reply."""
    rotation = entry.get("NextRotationDate")
    # ListSecrets calls it SecretVersionsToStages, DescribeSecret VersionIdsToStages.
    stages = entry.get("SecretVersionsToStages") or entry.get("VersionIdsToStages") or {}
    return SecretMeta(
        arn=entry["ARN"],
        name=entry["Name"],
        versions_to_stages={k: tuple(v) for k, v in stages.items()},
        tags={t["Key"]: t.get("Value", "") for t in entry.get("Tags") or ()},
        next_rotation=rotation.timestamp() if rotation is not None else None,
        deleted=entry.get("DeletedDate") is not None,
    )


class SecretsManagerSource:
    """:class:`SecretSource` over a boto3 ``secretsmanager`` client."""

    def __init__(self, client: Any, *, max_workers: int, observe: CallObserver | None = None) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aws")
        self._observe = observe or (lambda _op, _outcome, _transient: None)

    async def _call(self, operation: str, secret_id: str | None, fn: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))
        except Exception as exc:  # every botocore failure is translated below
            error = translate(exc, secret_id)
            self._observe(operation, error.code, error.transient)
            log.warning(
                "upstream_error",
                operation=operation,
                secret_id=secret_id,
                error=error.code,
                transient=error.transient,
                reason=error.message,
            )
            raise error from exc
        self._observe(operation, "ok", False)
        return result

    async def get_secret_value(self, secret_id: str, selector: Selector) -> SecretValue:
        """GetSecretValue, always naming a stage when no version id is given."""
        kwargs: dict[str, str] = {"SecretId": secret_id}
        if selector.version_id:
            kwargs["VersionId"] = selector.version_id
        stage = selector.upstream_stage
        if stage:
            kwargs["VersionStage"] = stage
        reply = await self._call("GetSecretValue", secret_id, self._client.get_secret_value, **kwargs)
        return value_from_response(reply)

    async def batch_get(self, secret_ids: Sequence[str]) -> BatchResult:
        """BatchGetSecretValue in chunks of 20.

        A batch entry whose stages lack ``AWSCURRENT`` is re-read one by one
        with an explicit stage: an emulator (and any eventually consistent
        read) can hand back a version that is no longer current.
        """
        result = BatchResult()
        for start in range(0, len(secret_ids), BATCH_LIMIT):
            chunk = list(secret_ids[start : start + BATCH_LIMIT])
            try:
                reply = await self._call(
                    "BatchGetSecretValue", None, self._client.batch_get_secret_value, SecretIdList=chunk
                )
            except UpstreamError as exc:
                for secret_id in chunk:
                    result.errors[secret_id] = exc
                continue
            answered: set[str] = set()
            for entry in reply.get("SecretValues", ()):
                value = value_from_response(entry)
                asked = _match_asked(chunk, value)
                answered.update(asked)
                if AWSCURRENT not in value.version_stages:
                    for secret_id in asked or [value.arn]:
                        await self._get_one_into(result, secret_id)
                    continue
                result.values.append(value)
            for error in reply.get("Errors", ()):
                secret_id = error.get("SecretId", "")
                answered.add(secret_id)
                fake = ClientError(
                    {"Error": {"Code": error.get("ErrorCode"), "Message": error.get("Message")}}, "Batch"
                )
                result.errors[secret_id] = translate(fake, secret_id)
            for secret_id in chunk:
                if secret_id not in answered:
                    await self._get_one_into(result, secret_id)
        return result

    async def _get_one_into(self, result: BatchResult, secret_id: str) -> None:
        try:
            result.values.append(await self.get_secret_value(secret_id, Selector()))
        except UpstreamError as exc:
            result.errors[secret_id] = exc

    async def describe(self, secret_id: str) -> SecretMeta:
        """DescribeSecret."""
        reply = await self._call("DescribeSecret", secret_id, self._client.describe_secret, SecretId=secret_id)
        return meta_from_entry(reply)

    async def list_secrets(
        self,
        name_prefixes: Sequence[str] = (),
        tag_keys: Sequence[str] = (),
        *,
        until: Callable[[dict[str, SecretMeta]], bool] | None = None,
    ) -> list[SecretMeta]:
        """ListSecrets, all pages (or until ``until`` is satisfied); one pass per filter kind."""
        filters: list[list[dict[str, Any]]] = []
        if name_prefixes:
            filters.append([{"Key": "name", "Values": list(name_prefixes)}])
        if tag_keys:
            filters.append([{"Key": "tag-key", "Values": list(tag_keys)}])
        if not filters:
            filters.append([])
        seen: dict[str, SecretMeta] = {}
        for flt in filters:
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"MaxResults": LIST_PAGE_SIZE}
                if flt:
                    kwargs["Filters"] = flt
                if token:
                    kwargs["NextToken"] = token
                reply = await self._call("ListSecrets", None, self._client.list_secrets, **kwargs)
                for entry in reply.get("SecretList", ()):
                    meta = meta_from_entry(entry)
                    seen[meta.arn] = meta
                token = reply.get("NextToken")
                if not token or (until is not None and until(seen)):
                    break
        return list(seen.values())

    def close(self) -> None:
        """Stop the worker threads without waiting for a stuck call."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _match_asked(chunk: Sequence[str], value: SecretValue) -> list[str]:
    """Which of the ids we asked for this batch entry answers (name, ARN or partial ARN)."""
    return [
        secret_id
        for secret_id in chunk
        if secret_id in (value.name, value.arn) or (secret_id.startswith("arn:") and value.arn.startswith(secret_id))
    ]
