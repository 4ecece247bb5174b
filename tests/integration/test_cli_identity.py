"""`get`, `wait` and `exec`: authenticated the way the agent is configured, and exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import AgentFactory, run_cli
from tests.support.configs import write_token
from tests.support.faultproxy import Fault, FaultProxy

CLIENT_TOKEN = "ops-" + "c3" * 12


def clients_only(tmp_path: Path) -> str:
    """One client, recognised by its token only; no shared auth.token."""
    path = write_token(tmp_path / "ops.token", CLIENT_TOKEN)
    return f'[[clients]]\nname = "ops"\ntoken = "file://{path}"\nallow = ["ops/*"]\n'


async def test_get_and_wait_work_when_auth_headers_leave_out_the_aws_header(
    sm: Any, moto: MotoServer, run_agent: AgentFactory
) -> None:
    """With auth.headers = ["X-Vault-Token"] the CLI still authenticates (Authorization: Bearer)."""
    sm.create_secret(Name="ops/key", SecretString="k-1")
    async with run_agent(moto.url, auth__headers=["X-Vault-Token"], prefetch__secrets=["ops/key"]) as agent:
        env = {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])}
        got = await asyncio.to_thread(run_cli, ["get", "ops/key"], env)
        waited = await asyncio.to_thread(run_cli, ["wait", "--secrets", "ops/key", "--timeout", "10"], env)
    assert (got.returncode, got.stdout) == (0, "k-1"), got.stderr
    assert waited.returncode == 0, waited.stderr


async def test_clients_only_agent_read_with_token_file_or_environment(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """With only [[clients]] tokens, --token-file and SECRETS_AGENT_TOKEN name the client's token."""
    sm.create_secret(Name="ops/key", SecretString="k-2")
    token_path = write_token(tmp_path / "cli.token", CLIENT_TOKEN + "\n")
    async with run_agent(moto.url, config=clients_only(tmp_path), shared_token=False) as agent:
        env = {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1]), "AWS_TOKEN": ""}
        by_file = await asyncio.to_thread(run_cli, ["get", "ops/key", "--token-file", str(token_path)], env)
        by_env = await asyncio.to_thread(run_cli, ["get", "ops/key"], {**env, "SECRETS_AGENT_TOKEN": CLIENT_TOKEN})
        waited = await asyncio.to_thread(
            run_cli, ["wait", "--secrets", "ops/key", "--timeout", "10", "--token-file", str(token_path)], env
        )
        child = "import os, sys; sys.exit(0 if os.environ['KEY'] == 'k-2' else 5)"
        execd = await asyncio.to_thread(
            run_cli,
            ["exec", "--token-file", str(token_path), "--env", "KEY=ops/key", "--", sys.executable, "-c", child],
            env,
        )
        nothing = await asyncio.to_thread(run_cli, ["get", "ops/key"], env)
    assert (by_file.returncode, by_file.stdout) == (0, "k-2"), by_file.stderr
    assert (by_env.returncode, by_env.stdout) == (0, "k-2"), by_env.stderr
    assert waited.returncode == 0, waited.stderr
    assert execd.returncode == 0, execd.stderr
    assert nothing.returncode == 2 and "--token-file" in nothing.stderr  # no token at all: says how to give one


async def test_exec_refuses_a_name_that_is_not_a_signal() -> None:
    """`exec --signal SIG_IGN` (and exec.signal from the environment) is a usage error (2) before anything runs."""
    flag = await asyncio.to_thread(
        run_cli, ["exec", "--on-change", "signal", "--signal", "SIG_IGN", "--env", "X=a", "--", "true"]
    )
    env = await asyncio.to_thread(
        run_cli, ["exec", "--env", "X=a", "--", "true"], {"SECRETS_AGENT_EXEC_SIGNAL": "SIG_DFL"}
    )
    assert flag.returncode == 2 and "exec.signal" in flag.stderr, flag.stderr
    assert env.returncode == 2 and "exec.signal" in env.stderr, env.stderr


async def test_wait_reports_a_timeout_when_the_agent_answers_but_is_not_ready(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """An agent that answers but stays not ready makes `wait` exit 14 (timed out), not 12 (unreachable)."""
    sm.create_secret(Name="ops/slow", SecretString="s")
    proxy.add(Fault("BatchGetSecretValue", "delay", seconds=30))  # prefetch outlasts the wait below, however slow
    async with run_agent(proxy.url, aws__read_timeout_seconds=60, prefetch__secrets=["ops/slow"]) as agent:
        env = {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])}
        waited = await asyncio.to_thread(run_cli, ["wait", "--timeout", "1"], env)
    assert waited.returncode == 14, waited.stderr


async def test_exec_embedded_agent_accepts_the_callers_own_token(sm: Any, moto: MotoServer, tmp_path: Path) -> None:
    """With no agent running and only --token-file, exec's embedded agent serves the child with that token."""
    sm.create_secret(Name="ops/emb", SecretString="embedded")
    token_path = write_token(tmp_path / "cli.token", CLIENT_TOKEN)
    env = {
        "SECRETS_AGENT_SERVER_HTTP_PORT": str(free_port()),
        "SECRETS_AGENT_AWS_ENDPOINT_URL": moto.url,
        "SECRETS_AGENT_AWS_REGION": "us-east-1",
        "AWS_TOKEN": "",
    }
    child = "import os, sys; sys.exit(0 if os.environ['V'] == 'embedded' else 5)"
    result = await asyncio.to_thread(
        run_cli,
        ["exec", "--token-file", str(token_path), "--env", "V=ops/emb", "--", sys.executable, "-c", child],
        env,
    )
    assert result.returncode == 0, result.stderr
