"""Secrets Manager behind the :class:`~agent.upstream.source.SecretSource` seam.

Every call goes through :class:`~agent.upstream.calls.UpstreamCalls` (the bounded
pool, metrics, translation into the agent's errors) against one shared,
thread-safe boto3 client per region: a read by a full ARN in another region
goes to that region (:mod:`agent.upstream.regions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from agent.core.errors import UpstreamError
from agent.core.types import AWSCURRENT, SecretValue, Selector
from agent.upstream.calls import UpstreamCalls, client_error, translate
from agent.upstream.regions import RegionalClients, arn_region
from agent.upstream.source import BATCH_LIMIT, LIST_PAGE_SIZE, BatchResult, SecretMeta, VersionInfo
from agent.upstream.times import epoch_seconds


def value_from_response(reply: dict[str, Any]) -> SecretValue:
    """Build a :class:`SecretValue` from a GetSecretValue-shaped dict."""
    return SecretValue(
        arn=reply["ARN"],
        name=reply["Name"],
        version_id=reply["VersionId"],
        version_stages=tuple(reply.get("VersionStages") or ()),
        created_date=epoch_seconds(reply.get("CreatedDate")),
        secret_string=reply.get("SecretString"),
        secret_binary=reply.get("SecretBinary"),
    )


def rotation_schedule(rules: Any) -> str | None:
    """RotationRules as one line: the schedule expression, else "every N days"."""
    if not isinstance(rules, dict):
        return None
    expression = rules.get("ScheduleExpression")
    if isinstance(expression, str) and expression:
        return expression
    days = rules.get("AutomaticallyAfterDays")
    return f"every {days} days" if isinstance(days, int) else None


def meta_from_entry(entry: dict[str, Any]) -> SecretMeta:
    """Build a :class:`SecretMeta` from a ListSecrets entry or DescribeSecret reply."""
    # ListSecrets calls it SecretVersionsToStages, DescribeSecret VersionIdsToStages.
    stages = entry.get("SecretVersionsToStages") or entry.get("VersionIdsToStages") or {}
    return SecretMeta(
        arn=entry["ARN"],
        name=entry["Name"],
        versions_to_stages={k: tuple(v) for k, v in stages.items()},
        tags={t["Key"]: t.get("Value", "") for t in entry.get("Tags") or ()},
        next_rotation=epoch_seconds(entry.get("NextRotationDate")),
        deleted=entry.get("DeletedDate") is not None,
        rotation_enabled=entry.get("RotationEnabled") if isinstance(entry.get("RotationEnabled"), bool) else None,
        rotation_schedule=rotation_schedule(entry.get("RotationRules")),
        last_rotated=epoch_seconds(entry.get("LastRotatedDate")),
    )


class SecretsManagerSource:
    """:class:`SecretSource` over a boto3 ``secretsmanager`` client."""

    def __init__(self, client: Any, calls: UpstreamCalls, *, regions: RegionalClients | None = None) -> None:
        self._client = client
        self._calls = calls
        self._regions = regions or RegionalClients(client)

    def _op(self, secret_id: str, operation: str) -> Callable[..., Any]:
        """``operation`` of the client for ``secret_id``'s region, picked (and made if new) in the worker thread."""

        def run(**kwargs: Any) -> Any:
            return getattr(self._regions.for_id(secret_id), operation)(**kwargs)

        return run

    async def get_secret_value(self, secret_id: str, selector: Selector) -> SecretValue:
        """GetSecretValue, always naming a stage when no version id is given."""
        kwargs: dict[str, str] = {"SecretId": secret_id}
        if selector.version_id:
            kwargs["VersionId"] = selector.version_id
        stage = selector.upstream_stage
        if stage:
            kwargs["VersionStage"] = stage
        reply = await self._calls.call(
            "GetSecretValue", self._op(secret_id, "get_secret_value"), secret_id=secret_id, **kwargs
        )
        return value_from_response(reply)

    async def batch_get(self, secret_ids: Sequence[str]) -> BatchResult:
        """BatchGetSecretValue in chunks of 20.

        A batch entry whose stages lack ``AWSCURRENT`` is re-read one by one
        with an explicit stage: an emulator (and any eventually consistent
        read) can hand back a version that is no longer current.
        """
        result = BatchResult()
        home = self._regions.home_region
        by_region: dict[str | None, list[str]] = {None: []}  # the home region's batches first
        for secret_id in secret_ids:  # a batch is answered by one region: ARNs elsewhere go in their own
            region = arn_region(secret_id)
            by_region.setdefault(None if region == home else region, []).append(secret_id)
        chunks = [
            ids[start : start + BATCH_LIMIT] for ids in by_region.values() for start in range(0, len(ids), BATCH_LIMIT)
        ]
        for chunk in chunks:
            try:
                reply = await self._calls.call(
                    "BatchGetSecretValue", self._op(chunk[0], "batch_get_secret_value"), SecretIdList=chunk
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
                fake = client_error(error.get("ErrorCode"), error.get("Message"), "BatchGetSecretValue")
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
        reply = await self._calls.call(
            "DescribeSecret", self._op(secret_id, "describe_secret"), secret_id=secret_id, SecretId=secret_id
        )
        return meta_from_entry(reply)

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        """ListSecretVersionIds, one page of up to 100 versions (deprecated ones left out)."""
        reply = await self._calls.call(
            "ListSecretVersionIds",
            self._op(secret_id, "list_secret_version_ids"),
            secret_id=secret_id,
            SecretId=secret_id,
            MaxResults=LIST_PAGE_SIZE,
        )
        return [
            VersionInfo(
                version_id=item["VersionId"],
                stages=tuple(item.get("VersionStages") or ()),
                created=epoch_seconds(item.get("CreatedDate")),
                last_accessed=epoch_seconds(item.get("LastAccessedDate")),
            )
            for item in reply.get("Versions", ())
            if isinstance(item.get("VersionId"), str)
        ]

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
            kwargs: dict[str, Any] = {"MaxResults": LIST_PAGE_SIZE} | ({"Filters": flt} if flt else {})
            async with aclosing(self._calls.pages("ListSecrets", self._client.list_secrets, **kwargs)) as pages:
                async for reply in pages:
                    for entry in reply.get("SecretList", ()):
                        meta = meta_from_entry(entry)
                        seen[meta.arn] = meta
                    if until is not None and until(seen):
                        break  # no call for the next page
        return list(seen.values())

    async def list_page(
        self, filters: Sequence[Mapping[str, Any]], max_results: int, next_token: str | None
    ) -> tuple[list[SecretMeta], str | None]:
        """One ListSecrets page with the caller's filters (what BatchGetSecretValue's Filters mean)."""
        kwargs: dict[str, Any] = {"Filters": list(filters), "MaxResults": max_results}
        if next_token:
            kwargs["NextToken"] = next_token
        reply = await self._calls.call("ListSecrets", self._client.list_secrets, **kwargs)
        return [meta_from_entry(entry) for entry in reply.get("SecretList", ())], reply.get("NextToken")


def _match_asked(chunk: Sequence[str], value: SecretValue) -> list[str]:
    """Which of the ids we asked for this batch entry answers (name, ARN or partial ARN)."""
    return [
        secret_id
        for secret_id in chunk
        if secret_id in (value.name, value.arn) or (secret_id.startswith("arn:") and value.arn.startswith(secret_id))
    ]
