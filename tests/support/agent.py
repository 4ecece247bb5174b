"""The agent under test: in-process (real listeners on this test's loop) or as a child process.

Every process or server started here is stopped by whoever started it: a leftover
agent could hang CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.config import load_settings
from agent.dev.emulator import free_port
from agent.server.lifecycle import Started, serve
from tests.support.environment import REGION
from tests.support.waiting import eventually, wait_until

__all__ = [
    "REGION",
    "TOKEN",
    "AgentFactory",
    "AgentHandle",
    "AgentProcess",
    "Reply",
    "agent_settings",
    "run_cli",
    "serve_agent",
]

TOKEN = "tok-" + secrets.token_hex(16)


@dataclass
class Reply:
    """An HTTP reply, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class AgentHandle:
    """Talks to a running agent over real TCP and the real Unix socket."""

    def __init__(self, started: Started) -> None:
        self.started = started
        self.base = f"http://{started.tcp[0]}:{started.tcp[1]}"
        self.tcp = aiohttp.ClientSession()
        self.unix = (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=started.unix_socket))
            if started.unix_socket
            else None
        )

    async def get(
        self,
        path: str,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        unix: bool = False,
        method: str = "GET",
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("X-Aws-Parameters-Secrets-Token", token)
        session = self.unix if unix else self.tcp
        assert session is not None
        base = "http://localhost" if unix else self.base
        async with session.request(method, base + path, headers=sent) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        reply = await self.get("/metrics")
        assert reply.status == 200, reply.text
        total = 0.0
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until /readyz answers 200."""

        async def ready() -> bool:
            return (await self.get("/readyz", token=None)).status == 200

        await eventually(ready, timeout=timeout, message="the agent to become ready")

    async def wait_for_poll_passes(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` more change-detection passes have completed, counting from now."""
        metric = "secrets_agent_poll_passes_total"
        target = await self.metric(metric) + count

        async def done() -> bool:
            return await self.metric(metric) >= target

        await eventually(done, timeout=timeout, interval=0.1, message=f"{count} more polling passes")

    async def close(self) -> None:
        await self.tcp.close()
        if self.unix is not None:
            await self.unix.close()


AgentFactory = Callable[..., contextlib.AbstractAsyncContextManager[AgentHandle]]


def agent_settings(
    endpoint: str,
    socket_dir: Path | None,
    *,
    config: str | None = None,
    shared_token: bool = True,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """Settings for a test agent: free port, the test token, one attempt per upstream call.

    The upstream read timeout and the read deadline are hang guards here (10 s), far above what
    moto takes even on a loaded machine: a test about timeouts sets its own, shorter, values.

    ``config`` is TOML text (for [[clients]] and friends) written next to the socket.
    """
    values: dict[str, Any] = {
        "server.http_port": free_port(),
        "aws.endpoint_url": endpoint,
        "aws.region": REGION,
        "aws.read_timeout_seconds": 10,
        "cache.read_deadline_seconds": 10,
        "aws.max_attempts": 1,
        "log.format": "json",
    }
    if socket_dir is not None:
        values["server.unix_socket"] = str(socket_dir / "agent.sock")
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    path = None
    if config is not None:
        handle, path = tempfile.mkstemp(prefix="agent-", suffix=".toml")
        with os.fdopen(handle, "w") as fh:
            fh.write(config)
    try:
        env = {"AWS_TOKEN": TOKEN} if shared_token else {}
        env.update(environ or {})
        return load_settings(path, environ=env, overrides=values)
    finally:
        if path is not None:
            os.unlink(path)


@contextlib.asynccontextmanager
async def serve_agent(
    endpoint: str, socket_dir: Path, *, unix: bool = True, **overrides: Any
) -> AsyncIterator[AgentHandle]:
    """Run the real agent (AppRunner, TCP + Unix socket in ``socket_dir``) on the running loop until exit."""
    settings = agent_settings(endpoint, socket_dir if unix else None, **overrides)
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Started] = loop.create_future()
    task = asyncio.create_task(serve(settings, on_started=started.set_result, install_signals=False))
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()  # serve() failed before listening: raise its error here
    handle = AgentHandle(started.result())
    try:
        yield handle
    finally:
        await handle.close()
        handle.started.stop.set()
        await task


def cli_environment(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without agent settings, with the test token, plus ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    env["AWS_TOKEN"] = TOKEN
    env.update(extra_env or {})
    return env


class AgentProcess:
    """``python -m agent`` as a real child process, its output captured line by line."""

    def __init__(self, args: list[str], env: dict[str, str], launcher: Sequence[str] = ()) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [*launcher, sys.executable, "-m", "agent", *args],  # launcher: tests.support.launcher's prefix
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """The first output line containing ``needle``; fails at once if the process exits before it."""

        def line_with_needle() -> str | None:
            for line in list(self.lines):
                if needle in line:
                    return line
            if self.process.poll() is not None:
                self._reader.join(timeout=2)
                raise AssertionError(f"process exited {self.process.returncode} before {needle!r}:\n{self.output}")
            return None

        found = wait_until(line_with_needle, timeout=timeout, message=lambda: f"{needle!r} in:\n{self.output}")
        assert found is not None
        return found

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` (None: just wait), wait for exit, kill after ``timeout``."""
        if self.process.poll() is None:
            if sig is not None:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def run_cli(
    args: list[str], extra_env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env=cli_environment(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def sdk_client(agent: AgentHandle, key_id: str = "default", secret: str = TOKEN) -> Any:
    """boto3 pointed at the agent's SDK endpoint, exactly as an app would configure it."""
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name="eu-west-1",
        endpoint_url=agent.base,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
