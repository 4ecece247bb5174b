"""Bad days, measured: the figures issue 10 asks for, one run each against the real agent process.

1. Time to first answer from cache while upstream hangs (a value past its TTL).
2. RSS before and after 10,000 reads of distinct ids while upstream answers 5xx.
3. Time from SIGTERM to exit while 20 reads wait on a hung upstream, and what they got.
4. Upstream GetSecretValue calls for 1,000 reads of a missing id.

The agent runs as a child process against moto through the fault-injecting
proxy from the test suite. Prints a table and writes ``bench/results/bad_days.json``.
Not a test: no assertion, just numbers (the tests pin the behaviour).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.dev.emulator import MotoServer, free_port
from bench.common import agent_command, agent_env, moto_client
from tests.support.faultproxy import Fault, FaultProxy

RESULTS = Path(__file__).resolve().parent / "results"
SM_OPS = ("GetSecretValue", "BatchGetSecretValue", "DescribeSecret", "ListSecrets")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Agent:
    """The agent as a child process on a free port."""

    def __init__(self, endpoint: str, settings: dict[str, str]) -> None:
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            agent_command(self.port, endpoint),
            env=agent_env(self.token, {"log_level": "error", **settings}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.session = aiohttp.ClientSession(headers={"X-Aws-Parameters-Secrets-Token": self.token})

    async def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        async with self.session.get(self.base + path) as reply:
            return reply.status, await reply.text(), dict(reply.headers)

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            await asyncio.sleep(0.05)

    async def ready(self) -> None:
        async def ok() -> bool:
            try:
                return (await self.get("/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await self.until(ok)

    async def read_many(self, paths: list[str], concurrency: int = 16) -> list[int]:
        statuses: list[int] = []
        queue = list(reversed(paths))

        async def worker() -> None:
            while queue:
                statuses.append((await self.get(queue.pop()))[0])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return statuses

    async def close(self) -> None:
        await self.session.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def hang_everything(proxy: FaultProxy) -> None:
    for operation in SM_OPS:
        proxy.add(Fault(operation, "hang"))


async def stale_during_hang(moto: MotoServer, proxy: FaultProxy) -> dict[str, Any]:
    moto_client(moto.url).create_secret(Name="bad/stale", SecretString="cached")
    agent = Agent(
        proxy.url,
        {"prefetch_secrets": "bad/stale", "cache_ttl_seconds": "1", "refresh_interval_seconds": "3600"},
    )
    try:
        await agent.ready()
        hang_everything(proxy)
        await asyncio.sleep(1.2)  # past the TTL
        started = time.perf_counter()
        status, _body, headers = await agent.get("/value/bad/stale")
        first = time.perf_counter() - started
        started = time.perf_counter()
        miss_status = (await agent.get("/value/bad/never"))[0]
        miss = time.perf_counter() - started
        return {
            "stale_first_answer_ms": round(first * 1000, 2),
            "stale_status": status,
            "stale_cache": headers.get("X-Cache"),
            "miss_status": miss_status,
            "miss_seconds": round(miss, 2),
        }
    finally:
        proxy.clear()
        await agent.close()


async def rss_over_outage(proxy: FaultProxy) -> dict[str, Any]:
    proxy.add(Fault("GetSecretValue", "error", status=500, code="InternalServiceError"))
    agent = Agent(proxy.url, {"aws_max_attempts": "1"})
    try:
        await agent.ready()
        await agent.read_many([f"/v1/warm/{i}" for i in range(1500)])
        before = rss_mib(agent.process.pid)
        statuses = await agent.read_many([f"/v1/outage/{i}" for i in range(10_000)])
        after = rss_mib(agent.process.pid)
        return {"rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1), "statuses": sorted(set(statuses))}
    finally:
        proxy.clear()
        await agent.close()


async def sigterm_while_hung(proxy: FaultProxy) -> dict[str, Any]:
    hang_everything(proxy)
    agent = Agent(proxy.url, {"cache_read_deadline_seconds": "60", "aws_read_timeout_seconds": "60"})
    try:
        await agent.ready()
        before = proxy.calls["GetSecretValue"]
        readers = asyncio.gather(*(agent.get(f"/v1/waiting/{i}") for i in range(20)), return_exceptions=True)

        async def waiting_upstream() -> bool:
            return proxy.calls["GetSecretValue"] - before >= 10  # the pool's 10 workers are all hung

        await agent.until(waiting_upstream)
        started = time.perf_counter()
        agent.process.send_signal(signal.SIGTERM)
        replies = await readers
        code = await asyncio.to_thread(agent.process.wait, 60)
        took = time.perf_counter() - started
        answered = [r[0] for r in replies if isinstance(r, tuple)]
        return {"exit_seconds": round(took, 2), "exit_code": code, "answered": len(answered), "statuses": answered}
    finally:
        proxy.clear()
        await agent.close()


async def missing_id(proxy: FaultProxy) -> dict[str, Any]:
    agent = Agent(proxy.url, {})
    try:
        await agent.ready()
        before = proxy.calls["GetSecretValue"]
        statuses = [(await agent.get("/v1/bad/missing"))[0] for _ in range(1000)]
        return {
            "reads": len(statuses),
            "statuses": sorted(set(statuses)),
            "calls": proxy.calls["GetSecretValue"] - before,
        }
    finally:
        await agent.close()


async def main() -> None:
    with MotoServer() as moto:
        proxy = await FaultProxy(moto.url).start()
        try:
            results = {
                "stale_during_hang": await stale_during_hang(moto, proxy),
                "rss_over_outage": await rss_over_outage(proxy),
                "sigterm_while_hung": await sigterm_while_hung(proxy),
                "missing_id": await missing_id(proxy),
            }
        finally:
            await proxy.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bad_days.json").write_text(json.dumps(results, indent=2))
    stale, rss, term, missing = (results[k] for k in results)
    rows = [
        (
            "first answer from cache, upstream hung (value past TTL)",
            f"{stale['stale_first_answer_ms']} ms, {stale['stale_status']} {stale['stale_cache']}",
        ),
        ("uncached read, upstream hung (read deadline 3 s)", f"{stale['miss_status']} after {stale['miss_seconds']} s"),
        ("RSS before / after 10,000 failing ids", f"{rss['rss_before_mib']} / {rss['rss_after_mib']} MiB"),
        (
            "SIGTERM to exit, 20 reads hung upstream (grace 10 s)",
            f"{term['exit_seconds']} s, exit {term['exit_code']}, {term['answered']}/20 answered "
            f"{sorted(set(term['statuses']))}",
        ),
        ("GetSecretValue calls for 1,000 reads of a missing id", f"{missing['calls']} ({missing['statuses']})"),
    ]
    print(f"{'measure':58} result")
    for name, value in rows:
        print(f"{name:58} {value}")


if __name__ == "__main__":
    asyncio.run(main())
