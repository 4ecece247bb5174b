"""AWS's caching client and Powertools read through the agent unchanged, and never read an old version.

Both talk to the agent's SDK endpoint exactly as an app would configure them
(endpoint URL, client name as access key, token as secret key). Upstream is
moto behind the counting proxy, so the tests can say what reached AWS.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_secretsmanager_caching import SecretCache as CachingClient
from aws_secretsmanager_caching import SecretCacheConfig

from tests.support.agent import AgentFactory, sdk_client
from tests.support.configs import write_token
from tests.support.faultproxy import FaultProxy

BOUND = 30.0  # a hang guard for a rotation to reach the client (ttl 1 s, refresh 1 s; ~1.5 s unloaded)


async def sees(read: Any, expected: str) -> None:
    """Poll ``read()`` (blocking, in a thread) until it returns ``expected``, within BOUND."""
    deadline = time.monotonic() + BOUND
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(read)
        if last == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"still {last!r} after {BOUND:g}s, expected {expected!r}")


async def test_caching_client_sees_rotation_in_ttl_mode(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """aws-secretsmanager-caching (DescribeSecret, then a read by VersionId) sees a PutSecretValue in ttl mode."""
    sm.create_secret(Name="lib/ttl", SecretString="v1")
    async with run_agent(proxy.url, refresh__mode="ttl", cache__ttl_seconds=1, prefetch__secrets=["lib/ttl"]) as agent:
        await agent.wait_ready()
        client = CachingClient(SecretCacheConfig(secret_refresh_interval=1), client=sdk_client(agent))
        assert await asyncio.to_thread(client.get_secret_string, "lib/ttl") == "v1"
        assert proxy.calls["GetSecretValue"] == 0  # the version the agent prefetched was served from its cache
        sm.put_secret_value(SecretId="lib/ttl", SecretString="v2")
        await sees(lambda: client.get_secret_string("lib/ttl"), "v2")


async def test_caching_client_sees_rotation_in_poll_mode(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """In poll mode the caching client sees a rotation within the polling interval, from the agent's cache."""
    sm.create_secret(Name="lib/poll", SecretString="v1")
    async with run_agent(
        proxy.url, refresh__interval_seconds=1, cache__ttl_seconds=300, prefetch__secrets=["lib/poll"]
    ) as agent:
        await agent.wait_ready()
        client = CachingClient(SecretCacheConfig(secret_refresh_interval=1), client=sdk_client(agent))
        assert await asyncio.to_thread(client.get_secret_string, "lib/poll") == "v1"
        sm.put_secret_value(SecretId="lib/poll", SecretString="v2")
        await sees(lambda: client.get_secret_string("lib/poll"), "v2")
        # The agent fetched the new version once (its poll); the client's reads by VersionId hit its cache.
        assert proxy.calls["GetSecretValue"] + proxy.calls["BatchGetSecretValue"] <= 2


async def test_describe_secret_is_kept_when_the_value_is_not_cached(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """A DescribeSecret for a secret whose value the agent does not hold is kept for the next client."""
    sm.create_secret(Name="lib/meta", SecretString="v")
    async with run_agent(proxy.url) as agent:
        boto = sdk_client(agent)
        first = await asyncio.to_thread(boto.describe_secret, SecretId="lib/meta")
        second = await asyncio.to_thread(boto.describe_secret, SecretId="lib/meta")
    assert first["ARN"] == second["ARN"] and proxy.calls["DescribeSecret"] == 1


async def test_powertools_get_multiple_uses_filters(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """Powertools' get_multiple (BatchGetSecretValue with Filters) works; a denied secret is never returned."""
    for name in ("pt/one", "pt/two", "pt/secret-admin"):
        sm.create_secret(Name=name, SecretString=f"value-of-{name}")
    token = write_token(tmp_path / "pt.token", "pt-" + "e7" * 12)
    config = f'[[clients]]\nname = "pt"\ntoken = "file://{token}"\nallow = ["pt/*"]\ndeny = ["pt/secret-*"]\n'
    async with run_agent(proxy.url, config=config) as agent:
        provider = SecretsProvider(boto3_client=sdk_client(agent))
        everything = await asyncio.to_thread(provider.get_multiple, ["pt/"])
        assert everything == {name: f"value-of-{name}" for name in ("pt/one", "pt/two", "pt/secret-admin")}
        limited = SecretsProvider(boto3_client=sdk_client(agent, "pt", "pt-" + "e7" * 12))
        reply = await asyncio.to_thread(
            limited.client.batch_get_secret_value, Filters=[{"Key": "name", "Values": ["pt/"]}]
        )
        got = {item["Name"]: item["SecretString"] for item in reply["SecretValues"]}
        assert got == {"pt/one": "value-of-pt/one", "pt/two": "value-of-pt/two"}
        assert [(e["SecretId"], e["ErrorCode"]) for e in reply["Errors"]] == [
            ("pt/secret-admin", "AccessDeniedException")
        ]
        assert await asyncio.to_thread(limited.get_multiple, ["pt/one", "pt/two"], force_fetch=True) == {
            "pt/one": "value-of-pt/one",
            "pt/two": "value-of-pt/two",
        }


async def test_filtered_batch_paginates(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A filtered BatchGetSecretValue returns MaxResults at a time with NextToken, as the API does."""
    for index in range(5):
        sm.create_secret(Name=f"page/s{index}", SecretString=f"v{index}")
    async with run_agent(proxy.url) as agent:
        boto = sdk_client(agent)
        seen: list[str] = []
        kwargs: dict[str, Any] = {"Filters": [{"Key": "name", "Values": ["page/"]}], "MaxResults": 2}
        for _ in range(5):
            reply = await asyncio.to_thread(boto.batch_get_secret_value, **kwargs)
            seen += [item["Name"] for item in reply["SecretValues"]]
            if "NextToken" not in reply:
                break
            kwargs["NextToken"] = reply["NextToken"]
    assert sorted(seen) == [f"page/s{index}" for index in range(5)]
