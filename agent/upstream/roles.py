"""Reads as another IAM role (``roleArn`` on a read): AssumeRole from the agent's own credentials.

:meth:`RoleSessions.open` calls STS AssumeRole once, through
:class:`~agent.upstream.calls.UpstreamCalls` (the pool, counted, errors
translated: a refused AssumeRole is an
:class:`~agent.core.errors.UpstreamDenied`), so a role the agent cannot assume
fails on its first use rather than on some later read. The credentials it
returns seed botocore's ``RefreshableCredentials``, which assume the role again
(with the agent's own STS client) shortly before they expire; nothing here
refreshes by hand, and credentials are never logged. The role's Secrets
Manager clients (one per region, as for the agent's own) use the same endpoint,
client config, worker pool and attempt pacer as the agent's.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from typing import Any

from botocore.credentials import CredentialResolver, Credentials, RefreshableCredentials

from agent.config import AwsSettings
from agent.upstream.botodata import new_session
from agent.upstream.calls import UpstreamCalls
from agent.upstream.regions import CLIENT_CREATION, RegionalClients
from agent.upstream.secretsmanager import SecretsManagerSource
from agent.upstream.session import ROLE_SESSION_NAME, AssumedRoleProvider, AwsClients, client_config

# arn:<partition>:iam::<account>:role/<optional path/><name>; IAM's own limits (path 512, name 64).
_ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\w+=,.@-]+/){0,64}[\w+=,.@-]{1,64}", re.ASCII)
MAX_ROLE_ARN_LENGTH = 2048


def valid_role_arn(text: str) -> bool:
    """True for a well-formed IAM role ARN (``arn:aws:iam::123456789012:role/path/name``)."""
    return len(text) <= MAX_ROLE_ARN_LENGTH and _ROLE_ARN.fullmatch(text) is not None


def _metadata(reply: dict[str, Any]) -> dict[str, str]:
    """AssumeRole's credentials in the form botocore's ``RefreshableCredentials`` take."""
    credentials = reply["Credentials"]
    expiration = credentials["Expiration"]
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials["SessionToken"],
        "expiry_time": expiration.isoformat() if hasattr(expiration, "isoformat") else str(expiration),
    }


class RoleSessions:
    """Opens a :class:`SecretsManagerSource` that reads as a given role."""

    def __init__(
        self,
        clients: AwsClients,
        settings: AwsSettings,
        calls: UpstreamCalls,
        *,
        on_client: Callable[[Any], None] | None = None,
    ) -> None:
        self._sts = clients.sts
        self._region = clients.region
        self._config = client_config(settings)
        self._endpoint: dict[str, Any] = {"endpoint_url": settings.endpoint_url} if settings.endpoint_url else {}
        self._calls = calls
        self._on_client = on_client or (lambda _client: None)

    async def open(self, role_arn: str) -> SecretsManagerSource:
        """AssumeRole now (raises the translated error), then a source reading with that role's credentials."""
        reply = await self._calls.call(
            "AssumeRole",
            lambda **kwargs: self._sts().assume_role(**kwargs),  # the STS client is made on first use, in the pool
            service="STS",
            RoleArn=role_arn,
            RoleSessionName=ROLE_SESSION_NAME,
        )
        credentials = RefreshableCredentials.create_from_metadata(
            _metadata(reply), refresh_using=functools.partial(self._assume, role_arn), method="assume-role"
        )
        # Making a session and a client parses service models: kept off the event loop.
        regions = await asyncio.get_running_loop().run_in_executor(None, self._clients_for, credentials)
        return SecretsManagerSource(regions.home, self._calls, regions=regions)

    def _assume(self, role_arn: str) -> dict[str, str]:
        """botocore's refresh: assume the role again (runs in the worker thread of the call that needs it)."""
        return _metadata(self._sts().assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME))

    def _clients_for(self, credentials: Credentials) -> RegionalClients:
        core = new_session()  # on the process's one data loader: models already parsed
        core.set_config_variable("region", self._region)
        core.register_component("credential_provider", CredentialResolver([AssumedRoleProvider(credentials)]))

        def make(region: str) -> Any:
            client = core.create_client("secretsmanager", region_name=region, config=self._config, **self._endpoint)
            self._on_client(client)
            return client

        with CLIENT_CREATION:
            home = make(self._region)
        return RegionalClients(home, make)
