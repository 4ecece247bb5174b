"""Secrets cannot be read out of the process (issue 10): not dumpable, no core file, optionally locked memory.

Every agent here is a real child process: hardening is applied by ``run`` and
``exec``, never inside the pytest process. The attacker is a process with the
agent's uid and no capabilities (``tests/support/launcher.py --scan``); the
agent runs without capabilities too, as under the shipped systemd unit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.dev.emulator import MotoServer, free_port
from agent.server.hardening import CAP_IPC_LOCK, has_capability, status_field
from tests.support.agent import TOKEN, AgentFactory, AgentProcess
from tests.support.launcher import launcher

StartProcess = Callable[..., AgentProcess]

CORE_INHERITED = 1 << 20  # a non-zero core limit the agent starts with (soft; capped at the hard limit)
SCAN_TIMEOUT_SECONDS = 60


def base_args(endpoint: str, port: int) -> list[str]:
    return ["run", "--http-port", str(port), "--endpoint-url", endpoint, "--region", "us-east-1"]


async def fetch(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"X-Aws-Parameters-Secrets-Token": token} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.read()


def hardening_line(proc: AgentProcess) -> dict[str, Any]:
    return dict(json.loads(proc.wait_for('"process_hardening"')))


def scan(pid: int, needle: str) -> str:
    """What a process of the same uid with no capabilities finds of ``needle`` in ``pid``'s memory."""
    result = subprocess.run(
        [*launcher(no_capabilities=True), "--scan", str(pid), needle],
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def inherited_core_soft() -> int:
    """The soft core limit ``launcher(core=CORE_INHERITED)`` leaves a process with."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    return CORE_INHERITED if hard == resource.RLIM_INFINITY or hard >= CORE_INHERITED else hard


HOLDS_ITS_ARGUMENT = "import time; print(1, flush=True); time.sleep(60)"


def can_lock_memory() -> bool:
    with open("/proc/self/status") as fh:
        privileged = has_capability(fh.read(), CAP_IPC_LOCK)
    return privileged or resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] == resource.RLIM_INFINITY


async def test_run_is_not_dumpable_and_writes_no_core_file(moto: MotoServer, agent_process: StartProcess) -> None:
    """`run` sets PR_SET_DUMPABLE 0 and RLIMIT_CORE 0/0 before anything else, and logs what the kernel reports."""
    port = free_port()
    proc = agent_process(base_args(moto.url, port), launcher=launcher(core=CORE_INHERITED))
    line = await asyncio.to_thread(hardening_line, proc)
    assert line["dumpable"] == 0
    assert (line["core_limit_soft"], line["core_limit_hard"]) == (0, 0)
    assert line["memory_locked"] is False  # lock_memory is off by default
    await asyncio.to_thread(proc.wait_for, '"listening"')
    limits = Path(f"/proc/{proc.process.pid}/limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.MULTILINE), limits
    events = [json.loads(text)["event"] for text in proc.lines if text.startswith("{")]
    assert events.index("process_hardening") < events.index("starting")  # before any secret is fetched
    assert (await fetch(f"http://127.0.0.1:{port}/ping", token=None))[0] == 200


async def test_same_uid_process_without_capabilities_cannot_read_a_cached_secret(
    sm: Any, moto: MotoServer, agent_process: StartProcess
) -> None:
    """A cached secret cannot be read from the agent's memory by a process of its uid with no capabilities."""
    canary = "HARDEN-CANARY-" + secrets.token_hex(12)
    sm.create_secret(Name="harden/canary", SecretString=canary)
    # Control: the same reader does find the canary in an ordinary (dumpable) process of that uid.
    holder = subprocess.Popen(
        [*launcher(no_capabilities=True), sys.executable, "-c", HOLDS_ITS_ARGUMENT, canary],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        control = await asyncio.to_thread(scan, holder.pid, canary)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    if control.startswith("refused"):
        pytest.skip(f"this kernel already refuses same-uid memory reads (Yama ptrace_scope?): {control}")
    assert control != "found 0", control
    port = free_port()
    proc = agent_process(base_args(moto.url, port), launcher=launcher(no_capabilities=True))
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert await fetch(f"http://127.0.0.1:{port}/value/harden/canary") == (200, canary.encode())
    found = await asyncio.to_thread(scan, proc.process.pid, canary)
    assert found.startswith("refused"), found


@pytest.mark.skipif(not can_lock_memory(), reason="needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK")
async def test_lock_memory_locks_when_permitted(sm: Any, moto: MotoServer, agent_process: StartProcess) -> None:
    """server.lock_memory = true with CAP_IPC_LOCK: mlockall holds (VmLck > 0) and the agent serves."""
    sm.create_secret(Name="harden/locked", SecretString="locked-value")
    port = free_port()
    proc = agent_process(base_args(moto.url, port), {"SECRETS_AGENT_SERVER_LOCK_MEMORY": "true"})
    line = await asyncio.to_thread(hardening_line, proc)
    assert line["memory_locked"] is True and line["locked_kb"] > 0
    await asyncio.to_thread(proc.wait_for, '"listening"')
    locked = status_field(Path(f"/proc/{proc.process.pid}/status").read_text(), "VmLck")
    assert locked is not None and locked > 0
    assert await fetch(f"http://127.0.0.1:{port}/value/harden/locked") == (200, b"locked-value")
    assert '"memory_not_locked"' not in proc.output


async def test_lock_memory_refused_warns_and_keeps_serving(
    sm: Any, moto: MotoServer, agent_process: StartProcess
) -> None:
    """Without CAP_IPC_LOCK and under a small RLIMIT_MEMLOCK: a warning naming both, nothing locked, still serving."""
    sm.create_secret(Name="harden/unlocked", SecretString="unlocked-value")
    port = free_port()
    proc = agent_process(
        base_args(moto.url, port),
        {"SECRETS_AGENT_SERVER_LOCK_MEMORY": "true"},
        launcher=launcher(memlock=64 * 1024, no_capabilities=True),
    )
    warning = json.loads(await asyncio.to_thread(proc.wait_for, '"memory_not_locked"'))
    assert warning["level"] == "warning"
    assert "CAP_IPC_LOCK" in warning["detail"] and "LimitMEMLOCK" in warning["detail"]
    line = await asyncio.to_thread(hardening_line, proc)
    assert line["memory_locked"] is False and line["dumpable"] == 0
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert status_field(Path(f"/proc/{proc.process.pid}/status").read_text(), "VmLck") == 0
    assert (await fetch(f"http://127.0.0.1:{port}/ping", token=None))[0] == 200
    assert await fetch(f"http://127.0.0.1:{port}/value/harden/unlocked") == (200, b"unlocked-value")


CHILD_REPORTS_ITSELF = (
    "import ctypes, resource, time; "
    "print(*resource.getrlimit(resource.RLIMIT_CORE), ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), flush=True); "
    "time.sleep(60)"
)


async def test_exec_is_not_dumpable_and_leaves_the_childs_core_limit(
    sm: Any, moto: MotoServer, run_agent: AgentFactory
) -> None:
    """exec is non-dumpable; its child keeps the core limit exec inherited and is dumpable (execve resets it)."""
    sm.create_secret(Name="harden/exec", SecretString="exec-held-value")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    async with run_agent(moto.url) as agent:
        env.update({"AWS_TOKEN": TOKEN, "SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])})
        process = await asyncio.create_subprocess_exec(
            *launcher(core=CORE_INHERITED, no_capabilities=True),
            sys.executable, "-m", "agent", "exec", "--env", "V=harden/exec", "--",
            sys.executable, "-c", CHILD_REPORTS_ITSELF,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            report = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
            assert report, "the child printed nothing"
            soft, hard, child_dumpable = (int(word) for word in report)
            assert (soft, hard) == (inherited_core_soft(), resource.getrlimit(resource.RLIMIT_CORE)[1])
            assert child_dumpable == 1
            exec_memory = await asyncio.to_thread(scan, process.pid, "exec-held-value")
            assert exec_memory.startswith("refused"), exec_memory
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)  # forwarded to the child
            _, err = await asyncio.wait_for(process.communicate(), 30)
    lines = [json.loads(text) for text in err.decode().splitlines() if text.startswith("{")]
    line = next((entry for entry in lines if entry["event"] == "process_hardening"), None)
    assert line is not None, err.decode()
    assert line["dumpable"] == 0
    assert line["core_limit_soft"] == inherited_core_soft()  # exec does not lower the limit its child inherits
