"""Fixtures for integration tests: a real moto_server, a fault proxy, and the real agent (in-process or as a process).

Every process or server a fixture starts, it stops: a leftover moto or agent could hang CI.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent.dev.emulator import MotoServer
from tests.support.agent import REGION, AgentFactory, AgentProcess, cli_environment, serve_agent
from tests.support.faultproxy import FaultProxy


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


@pytest.fixture
def sm(moto: MotoServer) -> Any:
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)


@pytest.fixture
def ssm(moto: MotoServer) -> Any:
    return boto3.client("ssm", region_name=REGION, endpoint_url=moto.url)


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[FaultProxy]:
    fault_proxy = await FaultProxy(moto.url).start()
    try:
        yield fault_proxy
    finally:
        await fault_proxy.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_agent(short_tmp: Path) -> AgentFactory:
    """Start the real agent (AppRunner, TCP + Unix socket) on this test's loop.

    Call as ``async with run_agent(endpoint, cache__ttl_seconds=5) as agent:``;
    ``section__key`` keyword arguments override settings.
    """
    return partial(serve_agent, socket_dir=short_tmp)


@pytest.fixture
def agent_process() -> Iterator[Callable[..., AgentProcess]]:
    """Factory for agent child processes; all are stopped at teardown."""
    started: list[AgentProcess] = []

    def start(args: list[str], extra_env: dict[str, str] | None = None, launcher: Sequence[str] = ()) -> AgentProcess:
        proc = AgentProcess(args, cli_environment(extra_env), launcher)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)
