"""Every AWS call (Secrets Manager, SQS, STS) goes through the one upstream pool and is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3

from agent.dev.emulator import MotoServer
from tests.support.agent import AgentFactory
from tests.support.environment import REGION


async def test_sts_and_sqs_calls_are_counted(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """GetCallerIdentity at start and the SQS long polls show in secrets_agent_upstream_calls_total."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto.url)
    queue = sqs.create_queue(QueueName="counted-events")["QueueUrl"]
    async with run_agent(moto.url, events__sqs_queue_url=queue, events__wait_time_seconds=1) as agent:
        calls = "secrets_agent_upstream_calls_total"
        assert await agent.metric(calls, operation="GetCallerIdentity", outcome="ok") == 1
        deadline = time.monotonic() + 30  # a hang guard: a loaded machine stretches 1 s long polls
        while await agent.metric(calls, operation="ReceiveMessage", outcome="ok") < 1:
            assert time.monotonic() < deadline, "no ReceiveMessage counted"
            await asyncio.sleep(0.1)
