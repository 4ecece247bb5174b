"""Fleet behaviour against moto through the fault proxy: prefetch when BatchGetSecretValue throttles."""

from __future__ import annotations

from typing import Any

from tests.support.agent import AgentFactory
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually


async def test_prefetch_falls_back_to_get_secret_value_when_batch_throttles(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """Every BatchGetSecretValue throttled: prefetch reads each secret with GetSecretValue and the agent is ready."""
    names = [f"fleet/s{i}" for i in range(3)]
    for name in names:
        sm.create_secret(Name=name, SecretString=f"value-{name}")
    proxy.add(Fault("BatchGetSecretValue", "error", status=400, code="ThrottlingException"))
    async with run_agent(proxy.url, refresh__interval_seconds=3600, prefetch__secrets=names) as agent:
        await agent.wait_ready()
        assert proxy.calls["BatchGetSecretValue"] >= 1
        assert proxy.calls["GetSecretValue"] == len(names)
        for name in names:
            reply = await agent.get(f"/value/{name}")
            assert (reply.status, reply.text, reply.headers["X-Cache"]) == (200, f"value-{name}", "hit")
        assert proxy.calls["GetSecretValue"] == len(names)  # the reads were served from what prefetch loaded
        metrics = (await agent.get("/metrics")).text
        assert "secrets_agent_batch_fallbacks_total 3.0" in metrics


async def test_large_fleet_detects_rotation_with_describe_secret(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """With fleet.size = 10,000 the agent makes no ListSecrets call and still sees a rotation (DescribeSecret)."""
    sm.create_secret(Name="fleet/rotated", SecretString="one")
    async with run_agent(
        proxy.url, refresh__interval_seconds=1, fleet__size=10_000, prefetch__secrets=["fleet/rotated"]
    ) as agent:
        await agent.wait_ready()
        sm.put_secret_value(SecretId="fleet/rotated", SecretString="two")

        async def rotated() -> bool:
            return (await agent.get("/value/fleet/rotated")).text == "two"

        await eventually(rotated, timeout=30, message="the rotation to be detected")
        assert proxy.calls["ListSecrets"] == 0 and proxy.calls["DescribeSecret"] >= 1
        metrics = (await agent.get("/metrics")).text
        assert 'secrets_agent_refresh_plan{plan="describe"} 1.0' in metrics
