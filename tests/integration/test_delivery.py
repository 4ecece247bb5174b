"""Delivery beyond HTTP: `get`/`wait` exit codes, `exec` env injection and rotation, templates, sd_notify."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import TOKEN, AgentFactory, AgentHandle, run_cli
from tests.support.paths import CONFIG
from tests.support.waiting import eventually

CHILD_WRITES_ENV = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    def note(text):
        with open(out, "a") as fh:
            fh.write(text + "\\n")
    signal.signal(signal.SIGHUP, lambda *_: note("HUP " + os.environ["DB_PASSWORD"]))
    note("START " + os.environ["DB_PASSWORD"])
    while True:
        time.sleep(0.05)  # idle until signalled or killed
    """
)


def cli_env(agent: AgentHandle) -> dict[str, str]:
    """Point CLI commands at an in-process agent's TCP port."""
    return {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])}


async def test_get_prints_value_and_exit_codes(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """`get` prints only the value; not found, denied and unreachable have distinct exit codes."""
    sm.create_secret(Name="cli/db", SecretString='{"password":"pw-1","user":"u"}')
    async with run_agent(moto.url) as agent:
        env = cli_env(agent)
        ok = await asyncio.to_thread(run_cli, ["get", "cli/db", "--field", "password"], env)
        assert (ok.returncode, ok.stdout) == (0, "pw-1")
        whole = await asyncio.to_thread(run_cli, ["get", "cli/db"], env)
        assert whole.stdout == '{"password":"pw-1","user":"u"}'
        missing = await asyncio.to_thread(run_cli, ["get", "cli/nope"], env)
        no_field = await asyncio.to_thread(run_cli, ["get", "cli/db", "--field", "nope"], env)
        denied = await asyncio.to_thread(run_cli, ["get", "cli/db"], {**env, "AWS_TOKEN": "wrong"})
        previous = await asyncio.to_thread(run_cli, ["get", "cli/db", "--stage", "AWSPREVIOUS"], env)
    assert (missing.returncode, no_field.returncode, denied.returncode) == (10, 10, 11)
    assert previous.returncode == 10 and missing.stdout == ""
    unreachable = await asyncio.to_thread(
        run_cli, ["get", "cli/db"], {"SECRETS_AGENT_SERVER_HTTP_PORT": str(free_port())}
    )
    assert unreachable.returncode == 12


async def test_get_uses_unix_socket_when_configured(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """With server.unix_socket set, `get` reads over the socket (the TCP port given is not listening)."""
    sm.create_secret(Name="cli/sock", SecretString="via-socket")
    async with run_agent(moto.url) as agent:
        env = {
            "SECRETS_AGENT_SERVER_UNIX_SOCKET": agent.started.unix_socket or "",
            "SECRETS_AGENT_SERVER_HTTP_PORT": "1",
        }
        result = await asyncio.to_thread(run_cli, ["get", "cli/sock"], env)
    assert (result.returncode, result.stdout) == (0, "via-socket")


async def test_wait(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """`wait` returns 0 once ready with the named secrets readable, 10 for a missing one, 12 with no agent."""
    sm.create_secret(Name="w/one", SecretString="1")
    async with run_agent(moto.url, prefetch__secrets=["w/one"]) as agent:
        env = cli_env(agent)
        ready = await asyncio.to_thread(run_cli, ["wait", "--secrets", "w/one", "--timeout", "10"], env)
        missing = await asyncio.to_thread(run_cli, ["wait", "--secrets", "w/one,w/two", "--timeout", "5"], env)
    assert ready.returncode == 0 and missing.returncode == 10
    nobody = await asyncio.to_thread(
        run_cli, ["wait", "--timeout", "1"], {"SECRETS_AGENT_SERVER_HTTP_PORT": str(free_port())}
    )
    assert nobody.returncode == 12


async def wait_for_lines(path: Path, count: int, timeout: float = 30.0) -> list[str]:
    """The lines of ``path`` once it has at least ``count`` of them."""

    def enough_lines() -> list[str] | None:
        if path.exists() and len(lines := path.read_text().splitlines()) >= count:
            return lines
        return None

    return await eventually(
        enough_lines,
        timeout=timeout,
        message=lambda: f"{count} lines in {path}, which has {path.read_text() if path.exists() else 'nothing'!r}",
    )


async def start_exec(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    full_env.update({"AWS_TOKEN": TOKEN, **env})
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "exec", *args,
        env=full_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_exec_injects_env_and_propagates_exit_code(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """exec puts secrets in the child's environment only and exits with the child's code."""
    sm.create_secret(Name="exec/db", SecretString='{"password":"exec-canary-pw"}')
    sm.create_secret(Name="exec/key", SecretString="exec-canary-key")
    child = "import os, sys; print(os.environ['DB_PASSWORD'], os.environ['API_KEY']); sys.exit(7)"
    async with run_agent(moto.url) as agent:
        process = await start_exec(
            ["--env", "DB_PASSWORD=exec/db#password", "--env", "API_KEY=exec/key", "--", sys.executable, "-c", child],
            cli_env(agent),
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 7, err.decode()
    assert out.decode().split() == ["exec-canary-pw", "exec-canary-key"]
    assert b"exec-canary" not in err


async def test_exec_refuses_to_start_child_without_every_secret(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """A missing secret stops exec before the child starts (exit 10)."""
    marker = tmp_path / "started"
    async with run_agent(moto.url) as agent:
        process = await start_exec(
            ["--env", "X=exec/missing", "--", "touch", str(marker)],
            cli_env(agent),
        )
        await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 10 and not marker.exists()


async def test_exec_restarts_child_on_rotation_and_forwards_signals(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """on_change=restart restarts the child with the new value; SIGTERM is forwarded; no value in exec's environment."""
    sm.create_secret(Name="exec/rot", SecretString='{"password":"first-pw"}')
    notes = tmp_path / "notes"
    async with run_agent(moto.url, refresh__interval_seconds=1, prefetch__secrets=["exec/rot"]) as agent:
        process = await start_exec(
            ["--env", "DB_PASSWORD=exec/rot#password", "--", sys.executable, "-c", CHILD_WRITES_ENV, str(notes)],
            {**cli_env(agent)},
        )
        try:
            assert await wait_for_lines(notes, 1) == ["START first-pw"]
            environ = Path(f"/proc/{process.pid}/environ").read_bytes()
            assert b"first-pw" not in environ
            sm.put_secret_value(SecretId="exec/rot", SecretString='{"password":"second-pw"}')
            assert (await wait_for_lines(notes, 2, timeout=30))[1] == "START second-pw"
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert b"first-pw" not in err and b"second-pw" not in err


async def test_exec_signal_mode(sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path) -> None:
    """on_change=signal sends SIGHUP to the running child instead of restarting it."""
    sm.create_secret(Name="exec/sig", SecretString='{"password":"a"}')
    notes = tmp_path / "notes"
    async with run_agent(moto.url, refresh__interval_seconds=1, prefetch__secrets=["exec/sig"]) as agent:
        process = await start_exec(
            ["--on-change", "signal", "--env", "DB_PASSWORD=exec/sig#password", "--", sys.executable, "-c",
             CHILD_WRITES_ENV, str(notes)],
            cli_env(agent),
        )  # fmt: skip
        try:
            await wait_for_lines(notes, 1)
            sm.put_secret_value(SecretId="exec/sig", SecretString='{"password":"b"}')
            lines = await wait_for_lines(notes, 2, timeout=30)
            assert lines == ["START a", "HUP a"]  # same process, told to reload
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 20)


async def test_exec_embedded_agent(sm: Any, moto: MotoServer, short_tmp: Path) -> None:
    """With no agent running, exec starts one in-process and the child still gets its secrets."""
    sm.create_secret(Name="emb/s", SecretString="embedded-value")
    env = {
        "SECRETS_AGENT_SERVER_HTTP_PORT": str(free_port()),
        "SECRETS_AGENT_AWS_ENDPOINT_URL": moto.url,
        "SECRETS_AGENT_AWS_REGION": "us-east-1",
    }
    process = await start_exec(
        ["--env", "V=emb/s", "--", sys.executable, "-c", "import os; print(os.environ['V'])"], env
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "embedded-value"


def template_config(tmp_path: Path, destination: Path, counter: Path, contents: str) -> str:
    return (
        f'[[templates]]\ndestination = "{destination}"\nperms = "0640"\n'
        f'command = "echo changed >> {counter}"\n'
        f"contents = '''{contents}'''\n"
    )


async def test_templates_render_atomically_and_only_on_change(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """Templates render before readiness with their perms, are replaced atomically, and rewrite only on change."""
    sm.create_secret(Name="tpl/db", SecretString='{"user":"app","password":"p1"}')
    destination = tmp_path / "db.conf"
    counter = tmp_path / "changes"
    contents = "user={{ secret('tpl/db', 'user') }}\npassword={{ secret('tpl/db', 'password') }}\n" + "#" * 20000
    config = template_config(tmp_path, destination, counter, contents)
    async with run_agent(moto.url, config=config, refresh__interval_seconds=1, prefetch__secrets=["tpl/db"]) as agent:
        await agent.wait_ready()
        assert destination.read_text().startswith("user=app\npassword=p1\n")
        assert stat.S_IMODE(destination.stat().st_mode) == 0o640
        inode = destination.stat().st_ino
        await agent.wait_for_poll_passes(2)  # two unchanged polling passes
        assert destination.stat().st_ino == inode  # not rewritten
        seen: set[str] = set()
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                seen.add(destination.read_text())
                await asyncio.sleep(0)  # yield to the agent between reads, as fast as possible

        task = asyncio.create_task(reader())
        sm.put_secret_value(SecretId="tpl/db", SecretString='{"user":"app","password":"p2"}')
        await eventually(
            lambda: "password=p2" in destination.read_text(),
            timeout=30,
            interval=0.1,
            message="the rotated password in the rendered file",
        )
        stop.set()
        await task
        assert "password=p2" in destination.read_text()
        lines = await wait_for_lines(counter, 2)
    assert lines == ["changed", "changed"]  # first render, then the rotation
    expected = {
        contents.replace("{{ secret('tpl/db', 'user') }}", "app").replace(
            "{{ secret('tpl/db', 'password') }}", password
        )
        for password in ("p1", "p2")
    }
    assert seen <= expected  # never a partial file


async def test_template_missing_key_blocks_readiness(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """With error_on_missing_key (default), a missing key leaves the file unwritten and the agent not ready."""
    sm.create_secret(Name="tpl/x", SecretString='{"a":"1"}')
    destination = tmp_path / "x.conf"
    config = f"[[templates]]\ndestination = \"{destination}\"\ncontents = \"{{{{ secret('tpl/x', 'b') }}}}\"\n"
    with capture_logs() as logs:
        async with run_agent(moto.url, config=config, prefetch__secrets=["tpl/x"]) as agent:
            await eventually(
                lambda: any(event["event"] == "template_failed" for event in logs), message="the template to fail"
            )
            assert (await agent.get("/readyz", token=None)).status == 503
    assert not destination.exists()


async def test_sd_notify(sm: Any, moto: MotoServer, run_agent: AgentFactory, short_tmp: Path) -> None:
    """READY=1 after prefetch, WATCHDOG=1 when asked, STOPPING=1 at shutdown, on the NOTIFY_SOCKET datagram socket."""
    path = short_tmp / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    messages: list[str] = []

    def drain() -> None:
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                return

    try:
        environ = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        async with run_agent(moto.url, environ=environ, unix=False) as agent:
            await agent.wait_ready()

            def ready_and_two_watchdogs() -> bool:
                drain()
                return any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 2

            # A hang guard, not the watchdog's deadline: a loaded machine stalls this loop (the agent's too)
            # past two 0.4 s periods. tests/unit/test_notify.py pins the ping interval with a fake sleep.
            await eventually(
                ready_and_two_watchdogs, timeout=30, message=lambda: f"READY=1, 2 x WATCHDOG=1 in {messages}"
            )
            assert any("READY=1" in m for m in messages)
            assert sum("WATCHDOG=1" in m for m in messages) >= 2
        drain()
        assert "STOPPING=1" in messages[-1]
    finally:
        receiver.close()


@pytest.mark.skipif(not os.path.exists("/usr/bin/systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """config/secrets-agent.service and its token oneshot pass systemd-analyze verify."""
    root = CONFIG
    installed = Path(sys.executable).parent / "secrets-agent"
    units = []
    for name in ("secrets-agent.service", "secrets-agent-token.service"):
        text = (root / name).read_text().replace("/usr/local/bin/secrets-agent", str(installed))
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in (root / "secrets-agent.service").read_text()
