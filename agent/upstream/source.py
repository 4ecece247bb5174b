"""The seam between the cache and AWS: :class:`SecretSource`, and the plain records it returns.

The cache and refresher depend only on this protocol, so their logic is
unit-tested against a fake; :class:`~agent.upstream.secretsmanager.SecretsManagerSource`
is the real implementation. API limits the planners need are stated here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core.errors import UpstreamError
from agent.core.types import AWSCURRENT, SecretValue, Selector

BATCH_LIMIT = 20  # BatchGetSecretValue's documented maximum SecretIdList length
LIST_PAGE_SIZE = 100  # ListSecrets' documented maximum MaxResults
NAME_FILTER_VALUES = 10  # ListSecrets accepts at most 10 values per filter


@dataclass(frozen=True, slots=True)  # slots: one per cached secret, kept for its life
class SecretMeta:
    """What ListSecrets/DescribeSecret say about a secret, without its value."""

    arn: str
    name: str
    versions_to_stages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    next_rotation: float | None = None
    deleted: bool = False
    # Rotation configuration, as DescribeSecret and ListSecrets report it (None: not reported).
    rotation_enabled: bool | None = None
    rotation_schedule: str | None = None  # ScheduleExpression, or "every N days"
    last_rotated: float | None = None

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


@dataclass(frozen=True)
class VersionInfo:
    """One version as ListSecretVersionIds reports it (no value)."""

    version_id: str
    stages: tuple[str, ...]
    created: float | None = None
    last_accessed: float | None = None


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

    async def list_page(
        self, filters: Sequence[Mapping[str, Any]], max_results: int, next_token: str | None
    ) -> tuple[list[SecretMeta], str | None]:
        """One ListSecrets page matching ``filters`` (the API's own filter shapes), and the next page's token."""
        ...

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        """ListSecretVersionIds (one page, up to 100 versions): ids, stages, CreatedDate, LastAccessedDate."""
        ...
