"""AWS session and client, built once.

Credentials come only from botocore's default chain (env, shared profile, web
identity/IRSA, ECS container, EC2 IMDSv2). With ``aws.role_arn`` the agent
assumes that role through botocore's own ``AssumeRoleCredentialFetcher`` and
``DeferredRefreshableCredentials``, which refresh before expiry; nothing here
refreshes credentials by hand.

botocore clients are thread-safe and sessions are not, so one client is created
here and shared by the bounded thread pool in which every call runs. Clients
are made with botocore itself: boto3 adds nothing the agent uses (its resource
layer, S3 transfers) and would cost 2 MiB of imports. Every session shares one
data loader (:mod:`agent.upstream.botodata`), so models are parsed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import ClientError, NoRegionError

from agent.config import AwsSettings
from agent.core.errors import CredentialsError, UpstreamError
from agent.upstream.botodata import new_session
from agent.upstream.calls import UpstreamCalls
from agent.upstream.regions import CLIENT_CREATION

# Upstream HTTP pool: enough for prefetch batches and concurrent misses; the
# worker pool (agent.upstream.calls) is sized to match.
MAX_POOL_CONNECTIONS = 10
CONNECT_TIMEOUT_SECONDS = 3
ROLE_SESSION_NAME = "secrets-agent"


class AssumedRoleProvider(CredentialProvider):
    """A credential provider that yields one role's (refreshing) assumed credentials.

    Put first in the agent's chain for ``aws.role_arn``, and as the only provider
    of each ``roleArn`` session (:mod:`agent.upstream.roles`).
    """

    METHOD = "assume-role"
    CANONICAL_NAME = "secrets-agent-assume-role"

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def load(self) -> Credentials:
        """The role's credentials (botocore refreshes them before they expire)."""
        return self._credentials


@dataclass
class AwsClients:
    """The shared clients the agent uses."""

    secretsmanager: Any
    # STS, made on first use (the credentials check, a roleArn read): with aws.validate_credentials = false
    # and no roleArn reads, its client and model are never built.
    sts: Callable[[], Any]
    region: str
    sqs: Any = None
    sns: Any = None  # only with events.sns_topic_arn (the agent's own subscription)
    # Parameter Store's client, made on first use: its service model costs about 5 MiB of RSS,
    # which an agent that serves no parameters should not pay.
    ssm: Callable[[], Any] | None = None
    # A Secrets Manager client for another region (same credentials, endpoint and config), for cross-region ARNs.
    secretsmanager_in: Callable[[str], Any] | None = None


def client_config(settings: AwsSettings) -> Config:
    """botocore client config: standard retries (backoff with jitter), bounded pool, finite timeouts."""
    return Config(
        # total_max_attempts counts the first try; botocore's "max_attempts" would count retries only.
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        connect_timeout=min(CONNECT_TIMEOUT_SECONDS, settings.read_timeout_seconds),
        read_timeout=settings.read_timeout_seconds,
        user_agent_extra="secrets-agent",
    )


def build_clients(settings: AwsSettings, *, with_sqs: bool = False, with_sns: bool = False) -> AwsClients:
    """Create the boto3 session and the clients; no network call is made here.

    ``endpoint_url`` from settings wins; otherwise botocore honours the standard
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` variables itself.
    """
    core = new_session()
    if settings.region:
        core.set_config_variable("region", settings.region)
    config = client_config(settings)
    endpoint: dict[str, Any] = {"endpoint_url": settings.endpoint_url} if settings.endpoint_url else {}

    if settings.role_arn:
        # The source identity for AssumeRole is whatever the default chain finds.
        source_session = new_session()
        if settings.region:
            source_session.set_config_variable("region", settings.region)
        source_credentials = source_session.get_credentials()
        if source_credentials is None:
            raise CredentialsError(
                "no AWS credentials found to assume aws.role_arn with "
                "(checked env, shared profile, web identity, container and instance metadata)"
            )

        def create_sts_client(service_name: str, **kwargs: Any) -> Any:
            kwargs.update(endpoint)
            return source_session.create_client(service_name, config=config, **kwargs)

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=create_sts_client,
            source_credentials=source_credentials,
            role_arn=settings.role_arn,
            extra_args={"RoleSessionName": ROLE_SESSION_NAME},
        )
        refreshing = DeferredRefreshableCredentials(method="assume-role", refresh_using=fetcher.fetch_credentials)
        core.get_component("credential_provider").insert_before("env", AssumedRoleProvider(refreshing))

    try:
        secretsmanager = core.create_client("secretsmanager", config=config, **endpoint)
        # Long polls hold a connection for up to 20 s: the read timeout must exceed that.
        sqs_config = config.merge(Config(read_timeout=max(settings.read_timeout_seconds, 30)))
        sqs = core.create_client("sqs", config=sqs_config, **endpoint) if with_sqs else None
        sns = core.create_client("sns", config=config, **endpoint) if with_sns else None
    except NoRegionError as exc:
        raise CredentialsError("no AWS region: set aws.region, AWS_REGION or AWS_DEFAULT_REGION") from exc

    made: list[Any] = []

    def sts() -> Any:
        with CLIENT_CREATION:  # botocore sessions are not thread-safe
            if not made:
                made.append(core.create_client("sts", config=config, **endpoint))
        return made[0]

    def secretsmanager_in(region: str) -> Any:
        return core.create_client("secretsmanager", region_name=region, config=config, **endpoint)

    def ssm() -> Any:
        return core.create_client("ssm", config=config, **endpoint)

    return AwsClients(
        secretsmanager=secretsmanager,
        sts=sts,
        region=secretsmanager.meta.region_name,
        sqs=sqs,
        sns=sns,
        ssm=ssm,
        secretsmanager_in=secretsmanager_in,
    )


async def caller_identity(clients: AwsClients, calls: UpstreamCalls) -> dict[str, str]:
    """STS GetCallerIdentity through the upstream pool; raises :class:`CredentialsError` with a clear reason."""
    try:
        reply = await calls.call("GetCallerIdentity", lambda: clients.sts().get_caller_identity(), service="STS")
    except UpstreamError as exc:
        if exc.code == "CredentialsUnavailable":
            raise CredentialsError(
                "no AWS credentials found (checked env, shared profile, web identity, "
                "container and instance metadata); give the agent a role or set credentials"
            ) from exc
        if exc.transient and not isinstance(exc.__cause__, ClientError):
            # No answer at all (connection refused, timeout): say so, not what STS "answered".
            raise CredentialsError(f"could not verify AWS credentials: {exc.message}") from exc
        if exc.transient:
            raise CredentialsError(f"could not verify AWS credentials, STS answered {exc.code}: {exc.message}") from exc
        raise CredentialsError(f"AWS rejected the agent's credentials: {exc.code}: {exc.message}") from exc
    return {"account": reply.get("Account", ""), "arn": reply.get("Arn", "")}
