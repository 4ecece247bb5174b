"""Parameter Store (SSM) behind a small seam: :class:`ParameterSource`, and :class:`ParameterValue`.

Every call goes through :class:`~agent.upstream.calls.UpstreamCalls` (the
bounded pool, metrics, translation into the agent's errors) against one shared
boto3 ``ssm`` client. ``ParameterNotFound`` and ``ParameterVersionNotFound``
become :class:`~agent.core.errors.SecretNotFound` (404, AWS's code kept), so the
cache's negative records and the HTTP error table treat them as Secrets
Manager's ``ResourceNotFoundException``.

A parameter is asked for by name (or ARN) with an optional selector, as
GetParameter itself takes it: ``name:3`` (version) or ``name:label``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core.errors import SecretNotFound, UpstreamError
from agent.core.types import format_rfc3339
from agent.upstream.calls import UpstreamCalls
from agent.upstream.regions import CLIENT_CREATION
from agent.upstream.times import epoch_seconds

SSM = "Systems Manager"
GET_PARAMETERS_LIMIT = 10  # GetParameters' documented maximum Names length
DESCRIBE_FILTER_VALUES = 50  # DescribeParameters: at most 50 values per ParameterFilters entry
DESCRIBE_PAGE_SIZE = 50  # DescribeParameters' documented maximum MaxResults
BY_PATH_PAGE_SIZE = 10  # GetParametersByPath's documented maximum MaxResults
NOT_FOUND_CODES = frozenset({"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"})
SECURE_STRING = "SecureString"


def split_selector(name: str) -> tuple[str, str | None]:
    """``/app/db:3`` → (``/app/db``, ``3``); a name without a selector → (name, None).

    An ARN's own colons are not selectors: only a colon after the ``parameter/`` part counts.
    """
    head, tail = "", name
    if name.startswith("arn:"):
        marker = name.find(":parameter/")
        if marker < 0:
            return name, None
        head, tail = name[: marker + len(":parameter/")], name[marker + len(":parameter/") :]
    base, sep, selector = tail.rpartition(":")
    if not sep or not base:
        return name, None
    return head + base, selector


def _iso(moment: Any) -> str | None:
    seconds = epoch_seconds(moment)  # a float (see botodata.epoch_or_parsed), or a datetime
    if seconds is None:
        return None
    return format_rfc3339(seconds, millis=True)


@dataclass(frozen=True)
class ParameterValue:
    """One parameter version as GetParameter returned it."""

    name: str
    arn: str
    type: str
    value: str
    version: int
    last_modified: str | None = None  # ISO 8601, UTC
    data_type: str | None = None
    selector: str | None = None
    source_result: str | None = None
    labels: tuple[str, ...] = field(default=())

    @property
    def secure(self) -> bool:
        """True for a ``SecureString``."""
        return self.type == SECURE_STRING

    def aws_fields(self) -> dict[str, Any]:
        """The ``Parameter`` object of GetParameter's JSON reply (absent fields left out)."""
        fields: dict[str, Any] = {
            "ARN": self.arn,
            "DataType": self.data_type or "text",
            "LastModifiedDate": self.last_modified,
            "Name": self.name,
            "Selector": self.selector,
            "SourceResult": self.source_result,
            "Type": self.type,
            "Value": self.value,
            "Version": self.version,
        }
        return {key: value for key, value in fields.items() if value is not None}

    @property
    def wire_json(self) -> bytes:
        """``{"Parameter": {...}, "ResultMetadata": {}}``: what the Lambda extension answers."""
        return json.dumps({"Parameter": self.aws_fields(), "ResultMetadata": {}}).encode()


@dataclass(frozen=True)
class ParameterMeta:
    """What DescribeParameters says about a parameter, without its value."""

    name: str
    version: int
    type: str


def value_from_reply(entry: dict[str, Any]) -> ParameterValue:
    """Build a :class:`ParameterValue` from a GetParameter(s) ``Parameter`` entry."""
    return ParameterValue(
        name=entry["Name"],
        arn=entry.get("ARN", ""),
        type=entry.get("Type", "String"),
        value=entry.get("Value", ""),
        version=int(entry.get("Version", 0)),
        last_modified=_iso(entry.get("LastModifiedDate")),
        data_type=entry.get("DataType"),
        selector=entry.get("Selector"),
        source_result=entry.get("SourceResult"),
        labels=tuple(entry.get("Labels") or ()),
    )


def _not_found(error: UpstreamError) -> UpstreamError:
    if error.code in NOT_FOUND_CODES and not isinstance(error, SecretNotFound):
        copy = SecretNotFound(error.message, code=error.code)
        copy.__cause__ = error
        return copy
    return error


@dataclass
class ParameterBatch:
    """Values fetched, and the names (as asked) upstream said do not exist."""

    values: list[ParameterValue] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    errors: dict[str, UpstreamError] = field(default_factory=dict)


class ParameterReads(Protocol):
    """What the parameter cache and refresher need from upstream (:class:`ParameterSource`, or a fake)."""

    async def get_parameter(self, name: str, *, decrypt: bool) -> ParameterValue:
        """One parameter, ``name`` possibly with a selector."""
        ...

    async def get_parameters(self, names: Sequence[str], *, decrypt: bool) -> ParameterBatch:
        """Many parameters, latest versions."""
        ...

    async def get_parameters_by_path(self, path: str, *, decrypt: bool) -> list[ParameterValue]:
        """Every parameter under ``path``."""
        ...

    async def describe(self, names: Sequence[str]) -> dict[str, ParameterMeta]:
        """Current versions, no values."""
        ...


class ParameterSource:
    """Parameter Store reads over a boto3 ``ssm`` client."""

    def __init__(
        self, make_client: Callable[[], Any], calls: UpstreamCalls, *, on_client: Callable[[Any], None]
    ) -> None:
        self._make_client = make_client
        self._on_client = on_client  # the Parameter Store attempt pacer's install
        self._made: Any = None
        self._calls = calls

    def _client(self) -> Any:
        """The ssm client, made (in the worker thread that first needs it) on first use."""
        with CLIENT_CREATION:  # boto3 sessions are not thread-safe (region clients are made under it too)
            if self._made is None:
                client = self._make_client()
                self._on_client(client)
                self._made = client
            return self._made

    def _op(self, name: str) -> Callable[..., Any]:
        """An API call run in the upstream pool, resolving the client there."""

        def call(**kwargs: Any) -> Any:
            return getattr(self._client(), name)(**kwargs)

        return call

    async def get_parameter(self, name: str, *, decrypt: bool) -> ParameterValue:
        """GetParameter (``name`` may carry a ``:version`` or ``:label`` selector)."""
        try:
            reply = await self._calls.call(
                "GetParameter",
                self._op("get_parameter"),
                service=SSM,
                secret_id=name,
                Name=name,
                WithDecryption=decrypt,
            )
        except UpstreamError as exc:
            raise _not_found(exc) from exc
        return value_from_reply(reply["Parameter"])

    async def get_parameters(self, names: Sequence[str], *, decrypt: bool) -> ParameterBatch:
        """GetParameters in chunks of 10; a failing chunk is recorded per name, not raised."""
        batch = ParameterBatch()
        for start in range(0, len(names), GET_PARAMETERS_LIMIT):
            chunk = list(names[start : start + GET_PARAMETERS_LIMIT])
            try:
                reply = await self._calls.call(
                    "GetParameters", self._op("get_parameters"), service=SSM, Names=chunk, WithDecryption=decrypt
                )
            except UpstreamError as exc:
                for name in chunk:
                    batch.errors[name] = _not_found(exc)
                continue
            batch.values.extend(value_from_reply(entry) for entry in reply.get("Parameters", ()))
            batch.invalid.extend(reply.get("InvalidParameters", ()))
        return batch

    async def get_parameters_by_path(self, path: str, *, decrypt: bool) -> list[ParameterValue]:
        """GetParametersByPath, recursive, all pages."""
        values: list[ParameterValue] = []
        async for reply in self._calls.pages(
            "GetParametersByPath",
            self._op("get_parameters_by_path"),
            service=SSM,
            secret_id=path,
            Path=path,
            Recursive=True,
            WithDecryption=decrypt,
            MaxResults=BY_PATH_PAGE_SIZE,
        ):
            values.extend(value_from_reply(entry) for entry in reply.get("Parameters", ()))
        return values

    async def describe(self, names: Sequence[str]) -> dict[str, ParameterMeta]:
        """DescribeParameters filtered by exact names (50 a call): name → current version and type.

        Metadata only: no value is read or decrypted, so a pass over many
        parameters costs one call per 50 and no KMS decryption.
        """
        found: dict[str, ParameterMeta] = {}
        for start in range(0, len(names), DESCRIBE_FILTER_VALUES):
            chunk = list(names[start : start + DESCRIBE_FILTER_VALUES])
            async for reply in self._calls.pages(
                "DescribeParameters",
                self._op("describe_parameters"),
                service=SSM,
                ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": chunk}],
                MaxResults=DESCRIBE_PAGE_SIZE,
            ):
                for entry in reply.get("Parameters", ()):
                    meta = ParameterMeta(
                        name=entry["Name"], version=int(entry.get("Version", 0)), type=entry.get("Type", "String")
                    )
                    found[meta.name] = meta
        return found
