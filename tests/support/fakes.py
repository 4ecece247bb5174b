"""Fakes of the upstream seams (SecretSource, ParameterReads) for unit tests of cache logic only."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.core.errors import SecretNotFound, UpstreamError
from agent.core.types import AWSCURRENT, SecretValue, Selector
from agent.upstream.source import BatchResult, SecretMeta, VersionInfo
from agent.upstream.ssm import ParameterBatch, ParameterMeta, ParameterValue, split_selector

ARN_PREFIX = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


class FakeSource:
    """Secrets in a dict; counts calls; can be gated to hold calls in flight."""

    def __init__(self) -> None:
        self.secrets: dict[str, SecretValue] = {}
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.fail_with: UpstreamError | None = None

    def add(self, name: str, value: str, version: str = "v1") -> SecretValue:
        secret = SecretValue(
            arn=f"{ARN_PREFIX}{name}-AbCdEf",
            name=name,
            version_id=version,
            version_stages=(AWSCURRENT,),
            created_date=1700000000.0,
            secret_string=value,
        )
        self.secrets[name] = secret
        return secret

    def _find(self, secret_id: str) -> SecretValue:
        for secret in self.secrets.values():
            if secret_id in (secret.name, secret.arn, secret.arn[:-7]):
                return secret
        raise SecretNotFound("Secrets Manager can't find the specified secret.")

    async def get_secret_value(self, secret_id: str, selector: Selector) -> SecretValue:
        self.calls[secret_id] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return self._find(secret_id)

    async def batch_get(self, secret_ids: Sequence[str]) -> BatchResult:
        result = BatchResult()
        for secret_id in secret_ids:
            try:
                result.values.append(self._find(secret_id))
            except UpstreamError as exc:
                result.errors[secret_id] = exc
        return result

    def meta(self, secret: SecretValue) -> SecretMeta:
        return SecretMeta(
            arn=secret.arn, name=secret.name, versions_to_stages={secret.version_id: secret.version_stages}
        )

    async def list_secrets(
        self,
        name_prefixes: Sequence[str] = (),
        tag_keys: Sequence[str] = (),
        *,
        until: Callable[[dict[str, SecretMeta]], bool] | None = None,
    ) -> list[SecretMeta]:
        self.calls["ListSecrets"] += 1
        return [self.meta(s) for s in self.secrets.values()]

    async def describe(self, secret_id: str) -> SecretMeta:
        self.calls[f"describe:{secret_id}"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return self.meta(self._find(secret_id))

    async def list_page(
        self, filters: Sequence[Mapping[str, Any]], max_results: int, next_token: str | None
    ) -> tuple[list[SecretMeta], str | None]:
        self.calls["ListSecrets"] += 1
        prefixes = [v for f in filters if f.get("Key") == "name" for v in f.get("Values", [])]
        found = [self.meta(s) for name, s in sorted(self.secrets.items()) if any(name.startswith(p) for p in prefixes)]
        start = int(next_token or 0)
        page = found[start : start + max_results]
        more = start + max_results < len(found)
        return page, str(start + max_results) if more else None

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        self.calls[f"versions:{secret_id}"] += 1
        if self.fail_with is not None:
            raise self.fail_with
        secret = self._find(secret_id)
        return [VersionInfo(secret.version_id, secret.version_stages, created=secret.created_date)]

    def close(self) -> None:
        pass


class FakeParameters:
    """A fake :class:`~agent.upstream.ssm.ParameterReads`: parameters in a dict, calls counted, gated, failing."""

    def __init__(self) -> None:
        self.values: dict[str, list[ParameterValue]] = {}  # name -> versions, oldest first
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.fail_with: UpstreamError | None = None

    def put(self, name: str, value: str, kind: str = "String") -> ParameterValue:
        versions = self.values.setdefault(name, [])
        param = ParameterValue(
            name=name,
            arn=f"arn:aws:ssm:us-east-1:123456789012:parameter{name}",
            type=kind,
            value=value,
            version=len(versions) + 1,
        )
        versions.append(param)
        return param

    async def get_parameter(self, name: str, *, decrypt: bool) -> ParameterValue:
        self.calls["GetParameter"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        base, selector = split_selector(name)
        versions = self.values.get(base)
        if not versions:
            raise SecretNotFound("parameter not found", code="ParameterNotFound")
        found = versions[int(selector) - 1] if selector and selector.isdigit() else versions[-1]
        if found.secure and not decrypt:
            return dataclasses.replace(found, value="ciphertext")
        return found

    async def get_parameters(self, names: Sequence[str], *, decrypt: bool) -> ParameterBatch:
        self.calls["GetParameters"] += 1
        batch = ParameterBatch()
        for name in names:
            if name in self.values:
                batch.values.append(self.values[name][-1])
            else:
                batch.invalid.append(name)
        return batch

    async def get_parameters_by_path(self, path: str, *, decrypt: bool) -> list[ParameterValue]:
        self.calls["GetParametersByPath"] += 1
        return [versions[-1] for name, versions in self.values.items() if name.startswith(path.rstrip("/") + "/")]

    async def describe(self, names: Sequence[str]) -> dict[str, ParameterMeta]:
        self.calls["DescribeParameters"] += 1
        if self.fail_with is not None:
            raise self.fail_with
        return {
            name: ParameterMeta(name=name, version=self.values[name][-1].version, type=self.values[name][-1].type)
            for name in names
            if name in self.values
        }
