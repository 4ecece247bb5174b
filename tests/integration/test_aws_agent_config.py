"""AWS's agent's configuration file, as is, running the real agent: token variables, path prefix, check-config."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import tomllib
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import load_settings
from agent.delivery.client import AgentClient
from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import TOKEN, AgentProcess, cli_environment, run_cli

SESSION_TOKEN = "session-" + TOKEN


def aws_agent_file(path: Path, port: int) -> Path:
    """AWS's agent's 1.x flat file: port as a string, a moved path prefix, two keys whose meaning differs."""
    path.write_text(
        f'log_level = "INFO"\nhttp_port = "{port}"\npath_prefix = "/secrets/"\n'
        'ttl_seconds = "300"\ncache_size = "100"\nignore_transient_errors = true\nregion = "us-east-1"\n'
    )
    return path


async def fetch(url: str, token: str) -> tuple[int, bytes]:
    headers = {"X-Aws-Parameters-Secrets-Token": token}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.read()


async def test_aws_agent_file_runs_with_session_token_and_moved_prefix(
    sm: Any, moto: MotoServer, short_tmp: Path
) -> None:
    """Run from AWS's agent's file: the token is AWS_SESSION_TOKEN (AWS_TOKEN unset), /secrets/ answers, /v1/ is 404."""
    sm.create_secret(Name="app/db", SecretString="s3cr3t")
    port = free_port()
    config = aws_agent_file(short_tmp / "aws-agent.toml", port)
    env = {k: v for k, v in cli_environment({"AWS_SESSION_TOKEN": SESSION_TOKEN}).items() if k != "AWS_TOKEN"}
    proc = AgentProcess(["run", "--config", str(config), "--endpoint-url", moto.url], env)
    try:
        await asyncio.to_thread(proc.wait_for, '"listening"')
        base = f"http://127.0.0.1:{port}"
        status, body = await fetch(f"{base}/secrets/app/db", SESSION_TOKEN)
        assert status == 200, body
        assert b"s3cr3t" in body
        assert (await fetch(f"{base}/v1/app/db", SESSION_TOKEN))[0] == 404
        assert (await fetch(f"{base}/secrets/app/db", TOKEN))[0] in (401, 403)
        assert (await fetch(f"{base}/secretsmanager/get?secretId=app/db", SESSION_TOKEN))[0] == 200
        # The CLI's client (exec's rotation check) reads on the moved prefix too.
        client = AgentClient(load_settings(str(config), environ=env))
        assert await asyncio.to_thread(client.version, "app/db") == json.loads(body)["VersionId"]
    finally:
        proc.stop(signal.SIGTERM)
    warnings = [line for line in proc.lines if "config_warning" in line]
    assert sum("cache_size" in line for line in warnings) == 1, proc.output
    assert sum("ignore_transient_errors" in line for line in warnings) == 1, proc.output
    assert len(warnings) == 2, proc.output


def test_check_config_prints_native_equivalent(short_tmp: Path) -> None:
    """`check-config` on AWS's agent's file prints native TOML that loads to the same settings, warnings on stderr."""
    config = aws_agent_file(short_tmp / "aws-agent.toml", 2999)
    result = run_cli(["check-config", "--config", str(config)])
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    native = tomllib.loads(result.stdout)
    assert native["server"]["path_prefix"] == "/secrets/"
    assert native["auth"]["token"] == "env:AWS_TOKEN,AWS_SESSION_TOKEN,AWS_CONTAINER_AUTHORIZATION_TOKEN"
    assert result.stderr.count("warning: AWS agent key") == 2, result.stderr
    converted = short_tmp / "native.toml"
    converted.write_text(result.stdout)
    env = cli_environment()
    original = load_settings(str(config), environ=env)
    again = load_settings(str(converted), environ=env)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(original, source=None, warnings=())
    plain = run_cli(["check-config", "--config", str(converted)])
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr
