"""The frozen settings every component receives. Defaults live in :mod:`agent.config.schema`, once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.config.access import ClientSettings, SecretPolicySettings, TokenRef
from agent.config.delivery import ExecSettings, SystemdSettings, TemplateSettings


@dataclass(frozen=True)
class ServerSettings:
    """Listeners and connection limits."""

    http_host: str
    http_port: int
    unix_socket: str | None
    unix_socket_mode: int
    max_connections: int
    unix_max_connections: int
    unix_max_connections_per_uid: int
    idle_timeout_seconds: float
    header_timeout_seconds: float
    body_timeout_seconds: float
    allowed_hosts: tuple[str, ...]
    allow_non_loopback: bool
    shutdown_grace_seconds: float
    lock_memory: bool
    path_prefix: str = "/v1/"
    fast_path: bool = True  # fresh cache hits answered below aiohttp (agent.server.fastpath)


@dataclass(frozen=True)
class AuthSettings:
    """How callers prove they may read."""

    token: TokenRef | None  # None only when [[clients]] exist and auth.token is not set
    headers: tuple[str, ...]


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS and as whom."""

    region: str | None
    endpoint_url: str | None
    role_arn: str | None
    validate_credentials: bool
    read_timeout_seconds: int
    max_attempts: int
    max_roles: int = 20  # distinct roleArn values, agent-wide


@dataclass(frozen=True)
class CacheSettings:
    """Cache bounds."""

    ttl_seconds: int
    max_entries: int
    max_stale_seconds: int
    read_deadline_seconds: float
    negative_ttl_seconds: int
    stale_while_revalidate_seconds: int


@dataclass(frozen=True)
class RefreshSettings:
    """How cached secrets are kept fresh: background polling or AWS-agent-style TTL."""

    mode: Literal["poll", "ttl"]
    interval_seconds: int
    parameter_interval_seconds: int = 30


@dataclass(frozen=True)
class FleetSettings:
    """How many agents share the account's quotas, and which share of them they may use."""

    size: int = 1
    quota_share: float = 0.5


@dataclass(frozen=True)
class EventsSettings:
    """Change events: an SQS queue fed by EventBridge, or the agent's own queue subscribed to an SNS topic."""

    sqs_queue_url: str | None
    wait_time_seconds: int
    sns_topic_arn: str | None = None
    queue_prefix: str = "secrets-agent-"


@dataclass(frozen=True)
class PrefetchSettings:
    """What to load before declaring readiness."""

    secrets: tuple[str, ...]
    name_prefixes: tuple[str, ...]
    tags: tuple[tuple[str, str | None], ...]
    parameters: tuple[str, ...] = ()
    parameter_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSettings:
    """Log level and rendering."""

    level: str
    format: Literal["json", "console"]
    summary_interval_seconds: float = 60.0  # 0: one info line per request
    request_lines_per_interval: int = 100  # 0: no cap on lines written at once


@dataclass(frozen=True)
class MetricsSettings:
    """Whether ``/metrics`` may be scraped without a token."""

    public: bool


@dataclass(frozen=True)
class AuditSettings:
    """Where audit records go (a file path, ``-`` for stdout, or None: off); ``deny``: refuse reads not recorded."""

    path: str | None
    on_failure: str = "deny"  # or "serve"


@dataclass(frozen=True)
class StatusSettings:
    """Rotation health and history (``/status``, ``/ui``, ``secrets-agent status``)."""

    rotation_grace_seconds: int
    health_interval_seconds: float
    seed_history: bool
    history_per_secret: int


@dataclass(frozen=True)
class Settings:
    """Everything the agent (and its CLI) needs, validated once."""

    server: ServerSettings
    auth: AuthSettings
    aws: AwsSettings
    cache: CacheSettings
    prefetch: PrefetchSettings
    log: LogSettings
    metrics: MetricsSettings
    refresh: RefreshSettings
    events: EventsSettings
    audit: AuditSettings
    exec: ExecSettings
    status: StatusSettings
    clients: tuple[ClientSettings, ...] = ()
    secret_policies: tuple[SecretPolicySettings, ...] = ()
    templates: tuple[TemplateSettings, ...] = ()
    systemd: SystemdSettings = field(default_factory=SystemdSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    # The token `get`, `wait` and `exec` present to a running agent: --token-file or
    # SECRETS_AGENT_TOKEN, else auth.token. None: rely on the Unix peer's uid/gid.
    caller_token: TokenRef | None = None
    warnings: tuple[str, ...] = ()
    source: str | None = None
