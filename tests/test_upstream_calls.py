"""Every AWS call (Secrets Manager, SQS, STS) runs in the one upstream pool and is counted."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import boto3
import pytest

from agent.core.errors import UpstreamClosed
from agent.dev.emulator import MotoServer
from agent.upstream.calls import UpstreamCalls
from agent.upstream.pool import DaemonPool
from tests.conftest import REGION, AgentFactory


async def test_sts_and_sqs_calls_are_counted(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """GetCallerIdentity at start and the SQS long polls show in secrets_agent_upstream_calls_total."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto.url)
    queue = sqs.create_queue(QueueName="counted-events")["QueueUrl"]
    async with run_agent(moto.url, events__sqs_queue_url=queue, events__wait_time_seconds=1) as agent:
        calls = "secrets_agent_upstream_calls_total"
        assert await agent.metric(calls, operation="GetCallerIdentity", outcome="ok") == 1
        deadline = time.monotonic() + 10
        while await agent.metric(calls, operation="ReceiveMessage", outcome="ok") < 1:
            assert time.monotonic() < deadline, "no ReceiveMessage counted"
            await asyncio.sleep(0.1)


async def test_calls_run_in_daemon_threads_and_stop_at_close() -> None:
    """Calls run in the pool's daemon threads (exit never waits for a long poll); after close() none start."""
    observed: list[tuple[str, str, str, bool]] = []
    calls = UpstreamCalls(max_workers=2, observe=lambda *outcome: observed.append(outcome))
    thread = await calls.call("Probe", threading.current_thread)
    assert thread.daemon and thread is not threading.main_thread()
    assert observed == [("Secrets Manager", "Probe", "ok", False)]
    calls.close()
    with pytest.raises(UpstreamClosed):
        await calls.call("Probe", threading.current_thread)


def test_pool_is_bounded_and_cancels_queued_work_on_shutdown() -> None:
    """No more than max_workers calls run at once; shutdown cancels what has not started."""
    pool = DaemonPool(2)
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1

    futures = [pool.submit(work) for _ in range(5)]
    deadline = time.monotonic() + 5
    while running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    for future in futures[:2]:
        future.result(timeout=5)
    assert peak == 2
    assert all(future.cancelled() for future in futures[2:])
    with pytest.raises(RuntimeError):
        pool.submit(work)
