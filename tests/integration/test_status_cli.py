"""`secrets-agent status [--watch]` against the real agent: the table, plain text off a TTY, exit codes 0, 5, 11."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from tests.support.agent import TOKEN, AgentFactory, AgentHandle, AgentProcess, cli_environment, run_cli
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually, wait_until

FAST = {"refresh__interval_seconds": 1, "status__health_interval_seconds": 0.2}
VALUE = "CANARY-STATUS-" + "5d" * 10


def _env(agent: AgentHandle) -> dict[str, str]:
    return {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])}


async def _health(agent: AgentHandle, name: str) -> str:
    document = (await agent.get("/status")).json()
    return str(next(entry["health"] for entry in document["secrets"] if entry["name"] == name))


async def test_status_healthy_exits_zero_in_plain_text(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """All secrets ok: exit 0, every secret and its version shown, no ANSI escape off a TTY, no value or token."""
    versions = {name: sm.create_secret(Name=name, SecretString=VALUE)["VersionId"] for name in ("cli/a", "cli/b")}
    async with run_agent(proxy.url, prefetch__secrets=list(versions), **FAST) as agent:
        await agent.wait_ready()
        result = await asyncio.to_thread(run_cli, ["status"], _env(agent))
    assert result.returncode == 0, result.stdout + result.stderr
    for name, version in versions.items():
        assert name in result.stdout and version[:8] in result.stdout
    assert "24h [" in result.stdout
    assert "\x1b" not in result.stdout
    assert VALUE not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


async def test_status_stale_exits_five(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Upstream failing (fault proxy) until the secret is stale: status shows it and exits 5."""
    sm.create_secret(Name="cli/stale", SecretString=VALUE)
    async with run_agent(proxy.url, prefetch__secrets=["cli/stale"], **FAST) as agent:
        await agent.wait_ready()
        proxy.add(Fault("*", "error", status=503, code="ServiceUnavailable"))
        await eventually(
            lambda: _stale(agent), timeout=30, interval=0.1, message="cli/stale to be stale while upstream fails"
        )
        result = await asyncio.to_thread(run_cli, ["status"], _env(agent))
    assert result.returncode == 5, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("cli/stale"))
    assert line.split()[1] == "stale"
    assert "upstream failing" in result.stdout


async def _stale(agent: AgentHandle) -> bool:
    return await _health(agent, "cli/stale") == "stale"


async def test_status_wrong_token_exits_eleven(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A refused token: exit 11 (denied), nothing on stdout, and the token is not echoed."""
    async with run_agent(proxy.url, **FAST) as agent:
        await agent.wait_ready()
        wrong = "wrong-" + TOKEN
        result = await asyncio.to_thread(run_cli, ["status"], {**_env(agent), "SECRETS_AGENT_TOKEN": wrong})
    assert result.returncode == 11, result.stderr
    assert result.stdout == "" and wrong not in result.stderr


async def test_status_watch_redraws_until_ctrl_c(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """--watch redraws every --interval; Ctrl-C ends it with the exit code of the last table (0 when healthy)."""
    sm.create_secret(Name="cli/watched", SecretString=VALUE)
    async with run_agent(proxy.url, prefetch__secrets=["cli/watched"], **FAST) as agent:
        await agent.wait_ready()
        watcher = AgentProcess(["status", "--watch", "--interval", "0.2"], cli_environment(_env(agent)))
        try:
            await asyncio.to_thread(
                wait_until,
                lambda: watcher.output.count("cli/watched") >= 3,
                timeout=30,
                message=lambda: f"three redraws in:\n{watcher.output}",
            )
        finally:
            code = await asyncio.to_thread(watcher.stop, signal.SIGINT)
    assert code == 0, watcher.output
    assert "\x1b" not in watcher.output
