"""Bad days upstream: outages cost no memory, hung calls cost readers no time, missing secrets cost no calls.

The agent runs for real (in process, or as a child process where memory and
exit are the point) against moto through the fault-injecting proxy. Waits are
bounded far below what the agent used to take (20-30 s per hung read, 130 of
200 in-flight requests dropped at SIGTERM, about 26 kB kept per failing id)
and far above the configured deadlines, so the tests pin behaviour, not speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.dev.emulator import free_port
from tests.support.agent import TOKEN, AgentFactory, AgentProcess
from tests.support.configs import write_token
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually

SM_OPERATIONS = ("GetSecretValue", "BatchGetSecretValue", "DescribeSecret", "ListSecrets")
StartProcess = Callable[..., AgentProcess]


def on_secrets_manager(proxy: FaultProxy, fault: Fault) -> None:
    for operation in SM_OPERATIONS:
        proxy.add(dataclasses.replace(fault, operation=operation))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def read_all(port: int, paths: list[str], concurrency: int = 16) -> list[int]:
    """GET every path with the test token, ``concurrency`` at a time; the statuses."""
    statuses: list[int] = []
    queue = list(reversed(paths))
    headers = {"X-Aws-Parameters-Secrets-Token": TOKEN}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", headers=headers) as session:

        async def worker() -> None:
            while queue:
                async with session.get(queue.pop()) as reply:
                    await reply.read()
                    statuses.append(reply.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def requests_read(port: int, count: int) -> bool:
    """``count`` connections to ``port`` accepted, with every byte sent on them read (Linux's /proc/net/tcp).

    For a listening socket the rx_queue column is its accept queue; for a connected one, bytes not yet read.
    """
    accepted = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state, queues = line.split()[1], line.split()[3], line.split()[4]
        if int(local.rpartition(":")[2], 16) != port:
            continue
        waiting = int(queues.partition(":")[2], 16)
        if waiting:
            return False  # a connection not accepted yet, or a request not read yet
        accepted += state == "01"  # ESTABLISHED
    return accepted >= count


async def answers_ping(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/ping") as reply:
            return reply.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.timeout(180)
async def test_ten_thousand_failing_ids_cost_no_memory(sm: Any, proxy: FaultProxy, agent_process: StartProcess) -> None:
    """Reading 10,000 distinct ids while upstream answers 5xx leaves the agent's RSS within a few MiB."""
    proxy.add(Fault("GetSecretValue", "error", status=500, code="InternalServiceError"))
    port = free_port()
    proc = agent_process(
        ["run", "--http-port", str(port), "--endpoint-url", proxy.url, "--region", "us-east-1", "--log-level", "error"],
        # A read deadline far above any stall of a loaded machine: every read is the upstream's 502, never a 504.
        {"SECRETS_AGENT_AWS_MAX_ATTEMPTS": "1", "SECRETS_AGENT_CACHE_READ_DEADLINE_SECONDS": "30"},
    )
    await eventually(lambda: answers_ping(port), timeout=30, message="the agent to listen")  # logs errors only
    warm = await read_all(port, [f"/v1/warm/{i}" for i in range(1500)])
    assert set(warm) == {502}
    before = rss_kib(proc.process.pid)
    failing = await read_all(port, [f"/v1/outage/{i}" for i in range(10_000)])
    after = rss_kib(proc.process.pid)
    assert set(failing) == {502} and len(failing) == 10_000
    assert after - before < 8 * 1024, f"RSS grew {after - before} KiB over 10,000 failing ids"


async def test_hung_upstream_costs_readers_no_time(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """With upstream hung, an expired cached value is answered at once and a miss gets 504 at the read deadline."""
    sm.create_secret(Name="hung/s", SecretString="cached")
    sm.create_secret(Name="hung/other", SecretString="never-read")
    async with run_agent(
        proxy.url,
        prefetch__secrets=["hung/s"],
        refresh__interval_seconds=3600,
        cache__ttl_seconds=1,
        cache__read_deadline_seconds=1,
        aws__read_timeout_seconds=30,  # botocore alone would wait this long per attempt
    ) as agent:
        await agent.wait_ready()
        on_secrets_manager(proxy, Fault("*", "hang"))
        await asyncio.sleep(1.2)  # deliberate: let the 1 s TTL lapse
        stale = await asyncio.wait_for(agent.get("/value/hung/s"), 15)
        assert (stale.status, stale.text, stale.headers["X-Cache"]) == (200, "cached", "revalidating")
        again = await asyncio.wait_for(agent.get("/value/hung/s"), 15)  # the revalidation is still hung
        assert (again.status, again.text) == (200, "cached")
        miss = await asyncio.wait_for(agent.get("/value/hung/other"), 15)
        assert miss.status == 504 and miss.json()["__type"] == "RequestTimeout"


async def test_sigterm_with_hung_upstream_answers_everyone_and_exits(
    sm: Any, proxy: FaultProxy, agent_process: StartProcess
) -> None:
    """SIGTERM while 20 reads wait on a hung upstream: each gets an answer (503) and the agent exits 0 in the grace."""
    on_secrets_manager(proxy, Fault("*", "hang"))
    port = free_port()
    proc = agent_process(
        ["run", "--http-port", str(port), "--endpoint-url", proxy.url, "--region", "us-east-1"],
        {
            "SECRETS_AGENT_SERVER_SHUTDOWN_GRACE_SECONDS": "2",
            "SECRETS_AGENT_CACHE_READ_DEADLINE_SECONDS": "60",
            "SECRETS_AGENT_AWS_READ_TIMEOUT_SECONDS": "60",
        },
    )
    await asyncio.to_thread(proc.wait_for, '"listening"')
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    try:
        for i, (_, writer) in enumerate(connections):
            writer.write(
                f"GET /v1/waiting/{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"X-Aws-Parameters-Secrets-Token: {TOKEN}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()  # in the kernel: on the agent's socket, read or not
        # SIGTERM only once the agent holds every request: a connection still in its accept queue, or
        # one whose bytes it has not read, is not a request yet (a loaded machine leaves some there).
        await eventually(
            lambda: requests_read(port, 20), timeout=30, message="the agent to accept and read the 20 requests"
        )
        await eventually(
            lambda: proxy.calls["GetSecretValue"] >= 10,  # the reads are waiting upstream (the pool runs 10 at a time)
            timeout=30,
            message="the reads to reach upstream",
        )
        proc.process.send_signal(signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in connections)), 30)
    finally:
        for _, writer in connections:
            writer.close()
    assert sorted(answer.split(b" ", 2)[1] for answer in answers) == [b"503"] * 20
    assert await asyncio.to_thread(proc.stop, None, 20) == 0  # exits on its own; killed (and failed) otherwise


async def test_missing_secret_is_not_passed_to_aws_one_to_one(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """1000 reads of a missing id are 1000 404s from one GetSecretValue; refreshNow asks again; rate limits apply."""
    token = write_token(tmp_path / "limited.token", "limited-" + "f6" * 12)
    config = f'[[clients]]\nname = "limited"\ntoken = "file://{token}"\nallow = ["*"]\nrate_per_second = 5\n'
    async with run_agent(proxy.url, config=config, cache__negative_ttl_seconds=60) as agent:
        statuses = [(await agent.get("/v1/nowhere")).status for _ in range(1000)]
        assert statuses == [404] * 1000
        assert proxy.calls["GetSecretValue"] == 1
        assert (await agent.get("/v1/nowhere?refreshNow=true")).status == 404
        assert proxy.calls["GetSecretValue"] == 2
        sm.create_secret(Name="nowhere", SecretString="now-here")
        assert (await agent.get("/v1/nowhere?refreshNow=true")).status == 200  # a create is seen on refresh
        limited = {"X-Aws-Parameters-Secrets-Token": "limited-" + "f6" * 12}
        burst = [(await agent.get("/v1/missing-too", token=None, headers=limited)).status for _ in range(20)]
        assert 429 in burst and set(burst) <= {404, 429}
