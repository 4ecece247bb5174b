"""The Unix socket listener: same app, tight mode, stale files replaced, removed on exit."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import ListenerError
from agent.dev.emulator import MotoServer
from tests.support.agent import AgentFactory


async def test_reads_over_unix_socket(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """The socket serves the same bodies as TCP and still demands the token."""
    sm.create_secret(Name="u/s", SecretString='{"k":"v"}')
    async with run_agent(moto.url) as agent:
        over_tcp = await agent.get("/v1/u/s")
        over_unix = await agent.get("/v1/u/s", unix=True)
        field = await agent.get("/value/u/s?field=k", unix=True)
        no_token = await agent.get("/v1/u/s", unix=True, token=None)
        ping = await agent.get("/ping", unix=True, token=None)
    assert over_unix.status == 200 and over_unix.body == over_tcp.body
    assert field.text == "v"
    assert no_token.status == 403
    assert ping.text == "healthy"


async def test_socket_mode_default_and_configured(moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """The socket file gets unix_socket_mode (default 0660), never world access."""
    path = short_tmp / "agent.sock"
    async with run_agent(moto.url):
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
    async with run_agent(moto.url, server__unix_socket_mode="0600"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_socket_removed_on_shutdown(moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """Stopping the agent removes its socket file."""
    path = short_tmp / "agent.sock"
    async with run_agent(moto.url):
        assert path.exists()
    assert not path.exists()


async def test_stale_socket_replaced(moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """A socket file left by a dead process is replaced at start."""
    path = short_tmp / "agent.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()  # the file stays, nobody listens
    assert path.exists()
    async with run_agent(moto.url) as agent:
        assert (await agent.get("/ping", unix=True, token=None)).status == 200


async def test_live_socket_not_stolen(moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """If another process listens on the path, the agent refuses rather than unlinking it."""
    path = short_tmp / "agent.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(ListenerError, match="another process"):
            async with run_agent(moto.url):
                pass
        assert path.exists()
    finally:
        live.close()


async def test_regular_file_not_replaced(moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """A regular file at the socket path is refused, not deleted."""
    path = short_tmp / "agent.sock"
    path.write_text("important")
    with pytest.raises(ListenerError, match="not a socket"):
        async with run_agent(moto.url):
            pass
    assert path.read_text() == "important"
