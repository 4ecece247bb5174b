"""The agent as a real process: signals, exit codes, credentials, and logs that never leak."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import TOKEN, AgentProcess, run_cli
from tests.support.configs import write_token
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually

StartProcess = Callable[..., AgentProcess]


def base_args(endpoint: str, port: int, *extra: str) -> list[str]:
    return ["run", "--http-port", str(port), "--endpoint-url", endpoint, "--region", "us-east-1", *extra]


async def fetch(url: str, token: str | None = TOKEN, **headers: str) -> tuple[int, bytes]:
    if token is not None:
        headers["X-Aws-Parameters-Secrets-Token"] = token
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.read()


async def test_sigterm_finishes_in_flight_and_exits_zero(
    sm: Any, proxy: FaultProxy, agent_process: StartProcess
) -> None:
    """SIGTERM stops accepting, lets an in-flight read finish, and exits 0."""
    sm.create_secret(Name="slow", SecretString="worth-waiting-for")
    proxy.add(Fault("GetSecretValue", "delay", seconds=1.0))
    port = free_port()
    # The 3 s default read deadline is no margin over a 1 s hold on a loaded machine: the read would be a 504.
    proc = agent_process(base_args(proxy.url, port), {"SECRETS_AGENT_CACHE_READ_DEADLINE_SECONDS": "30"})
    await asyncio.to_thread(proc.wait_for, '"listening"')
    in_flight = asyncio.create_task(fetch(f"http://127.0.0.1:{port}/value/slow"))
    await eventually(lambda: proxy.calls["GetSecretValue"] >= 1, message="the read to reach upstream (held 1 s there)")
    proc.process.send_signal(signal.SIGTERM)
    status, body = await in_flight
    assert (status, body) == (200, b"worth-waiting-for")
    assert await asyncio.to_thread(proc.stop, None) == 0
    assert '"stopped"' in proc.output


async def test_sigint_exits_zero(moto: MotoServer, agent_process: StartProcess) -> None:
    """Ctrl-C (SIGINT) is a clean stop too."""
    proc = agent_process(base_args(moto.url, free_port()))
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert await asyncio.to_thread(proc.stop, signal.SIGINT) == 0


async def test_no_secret_or_token_in_logs_at_debug(
    sm: Any, moto: MotoServer, agent_process: StartProcess, short_tmp: Path
) -> None:
    """At DEBUG, across every route and error path, no secret value or token reaches the output."""
    canary = "CANARY-" + "7f3a9c" * 4
    wrong = "WRONG-TOKEN-CANARY-" + "b1" * 8
    sm.create_secret(Name="canary/json", SecretString=json.dumps({"password": canary, "user": "u"}))
    sm.create_secret(Name="canary/plain", SecretString=canary)
    sm.create_secret(Name="canary/bin", SecretBinary=canary.encode())
    import boto3

    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=moto.url)
    ssm.put_parameter(Name="/canary/secure", Value=canary, Type="SecureString")
    port = free_port()
    sock = short_tmp / "a.sock"
    rendered = short_tmp / "rendered.conf"
    audit = short_tmp / "audit.log"
    config = short_tmp / "agent.toml"
    config.write_text(
        f'[audit]\npath = "{audit}"\n'
        f"[[templates]]\ndestination = \"{rendered}\"\ncontents = \"pw={{{{ secret('canary/json', 'password') }}}}\"\n"
    )
    proc = agent_process(
        [
            "run",
            "--config",
            str(config),
            *base_args(moto.url, port, "--log-level", "debug", "--unix-socket", str(sock))[1:],
        ],
        {"SECRETS_AGENT_PREFETCH_SECRETS": "canary/json,canary/plain,canary/bin"},
    )
    await asyncio.to_thread(proc.wait_for, '"template_written"')
    base = f"http://127.0.0.1:{port}"
    paths = [
        "/secretsmanager/get?secretId=canary/json",
        "/v1/canary/plain?refreshNow=true",
        "/v1/canary/bin",
        "/value/canary/json?field=password",
        "/value/canary/json?field=missing",
        "/value/canary/plain?field=x",
        "/value/canary/bin",
        "/v1/canary/missing",
        "/v1/canary/missing",  # the second answered from the negative cache
        "/v1/canary/plain?roleArn=arn:aws:iam::123456789012:role/canary-reader",
        "/v1/canary/plain?roleArn=not-an-arn-" + canary,
        "/systemsmanager/parameters/get?name=/canary/secure&withDecryption=true",
        "/systemsmanager/parameters/get?name=/canary/secure",
        "/systemsmanager/parameters/get?name=/aws/reference/secretsmanager/canary/plain&withDecryption=true",
    ]
    for path in paths:
        status, _body = await fetch(base + path)
        assert status in (200, 400, 404), (path, status)
    status, metrics_body = await fetch(base + "/metrics")
    assert status == 200 and canary.encode() not in metrics_body and TOKEN.encode() not in metrics_body
    status, status_body = await fetch(base + "/status")
    assert status == 200 and b"canary/json" in status_body
    assert canary.encode() not in status_body and TOKEN.encode() not in status_body
    # A parser error (a folded token header) and a refused Host, each carrying the token.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    folded = f"X-Aws-Parameters-Secrets-Token: x\r\n {TOKEN}\r\n"
    writer.write(f"GET /v1/canary/plain HTTP/1.1\r\nHost: localhost\r\n{folded}\r\n".encode())
    await writer.drain()
    assert TOKEN.encode() not in await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    status, _ = await fetch(base + "/v1/canary/plain", Host="evil.example")
    assert status == 400
    for headers in ({"X-Aws-Parameters-Secrets-Token": wrong}, {"Authorization": f"Bearer {wrong}"}):
        status, _ = await fetch(base + "/v1/canary/plain", token=None, **headers)
        assert status == 403
    connector = aiohttp.UnixConnector(path=str(sock))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://localhost/value/canary/plain", headers={"X-Aws-Parameters-Secrets-Token": TOKEN}) as reply,
    ):
        assert await reply.read() == canary.encode()
    # The SDK route too (GetSecretValue, by VersionId, DescribeSecret, a filtered batch, GetParameter),
    # with a good and a bad signature.
    import botocore.exceptions

    for secret_key in (TOKEN, wrong):
        client = boto3.client(
            "secretsmanager", region_name="us-east-1", endpoint_url=base,
            aws_access_key_id="default", aws_secret_access_key=secret_key,
        )  # fmt: skip
        try:
            await asyncio.to_thread(client.get_secret_value, SecretId="canary/json")
            version = (await asyncio.to_thread(client.describe_secret, SecretId="canary/json"))["VersionIdsToStages"]
            await asyncio.to_thread(client.get_secret_value, SecretId="canary/json", VersionId=next(iter(version)))
            await asyncio.to_thread(client.batch_get_secret_value, Filters=[{"Key": "name", "Values": ["canary/"]}])
            parameters = boto3.client(
                "ssm", region_name="us-east-1", endpoint_url=base,
                aws_access_key_id="default", aws_secret_access_key=secret_key,
            )  # fmt: skip
            await asyncio.to_thread(parameters.get_parameter, Name="/canary/secure", WithDecryption=True)
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidSignatureException"
    assert rendered.read_text() == f"pw={canary}"  # the template did use the value...
    assert await asyncio.to_thread(proc.stop) == 0
    output = proc.output
    assert '"request"' in output and '"route": "value"' in output and '"route": "sdk"' in output
    assert '"route": "parameter"' in output and '"role_arn"' in output and '"malformed_request"' in output
    for needle in (canary, TOKEN, wrong):
        assert needle not in output  # ...but neither the log nor the audit trail holds it
        assert needle not in audit.read_text()


async def test_missing_credentials_exit_3(moto: MotoServer) -> None:
    """With no credentials anywhere in the chain the agent exits 3 with a clear message."""
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = await asyncio.to_thread(run_cli, base_args(moto.url, free_port()), env)
    assert result.returncode == 3, result.stderr
    assert "no AWS credentials" in result.stderr


async def test_rejected_credentials_exit_3(proxy: FaultProxy) -> None:
    """Credentials STS rejects stop the agent with exit 3 and AWS's reason."""
    proxy.add(Fault("GetCallerIdentity", "error", status=403, code="InvalidClientTokenId"))
    result = await asyncio.to_thread(run_cli, base_args(proxy.url, free_port()))
    assert result.returncode == 3, result.stderr
    assert "rejected" in result.stderr and "InvalidClientTokenId" in result.stderr


async def test_validation_can_be_skipped(moto: MotoServer, agent_process: StartProcess) -> None:
    """validate_credentials = false starts without calling STS."""
    port = free_port()
    proc = agent_process(
        base_args(moto.url, port),
        {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "SECRETS_AGENT_AWS_VALIDATE_CREDENTIALS": "false"},
    )
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert (await fetch(f"http://127.0.0.1:{port}/ping", token=None))[0] == 200


async def test_port_in_use_exit_4(moto: MotoServer) -> None:
    """A taken port is reported and the agent exits 4."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = await asyncio.to_thread(run_cli, base_args(moto.url, port))
    assert result.returncode == 4, result.stderr
    assert f":{port}" in result.stderr


async def test_python_dash_m_and_console_script_agree() -> None:
    """`python -m agent --help` and `secrets-agent --help` show the same commands."""
    import shutil
    import subprocess
    import sys

    module = subprocess.run([sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, check=True)
    script = shutil.which("secrets-agent", path=str(Path(sys.executable).parent))
    assert script is not None
    console = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "check-config", "demo"):
        assert command in module.stdout and command in console.stdout


async def test_standard_endpoint_env_var(sm: Any, moto: MotoServer, agent_process: StartProcess) -> None:
    """Without aws.endpoint_url the standard AWS_ENDPOINT_URL variable points the agent at the emulator."""
    sm.create_secret(Name="env/ep", SecretString="via-env")
    port = free_port()
    proc = agent_process(["run", "--http-port", str(port), "--region", "us-east-1"], {"AWS_ENDPOINT_URL": moto.url})
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert await fetch(f"http://127.0.0.1:{port}/value/env/ep") == (200, b"via-env")


async def test_open_token_file_warns_at_start(moto: MotoServer, agent_process: StartProcess, tmp_path: Path) -> None:
    """A group/world-readable token file starts the agent with a warning naming the fix."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    port = free_port()
    proc = agent_process(
        base_args(moto.url, port),
        {"SECRETS_AGENT_AUTH_TOKEN": f"file://{token_file}", "AWS_TOKEN": ""},
    )
    line = await asyncio.to_thread(proc.wait_for, '"config_warning"')
    assert "chmod 0640" in line
    await asyncio.to_thread(proc.wait_for, '"listening"')
    assert (await fetch(f"http://127.0.0.1:{port}/ping", token=None))[0] == 200
    check = await asyncio.to_thread(run_cli, ["check-config"], {"SECRETS_AGENT_AUTH_TOKEN": f"file://{token_file}"})
    assert check.returncode == 0 and "warning:" in check.stderr


async def test_token_file_rotation_without_restart(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path
) -> None:
    """Replacing the token file's content switches the accepted token without a restart."""
    sm.create_secret(Name="tf", SecretString="v")
    token_file = write_token(tmp_path / "token", "first-token-value")
    port = free_port()
    proc = agent_process(base_args(moto.url, port), {"SECRETS_AGENT_AUTH_TOKEN": f"file://{token_file}"})
    await asyncio.to_thread(proc.wait_for, '"listening"')
    url = f"http://127.0.0.1:{port}/value/tf"
    assert (await fetch(url, token="first-token-value"))[0] == 200
    replacement = write_token(tmp_path / "token.new", "second-token-value")
    replacement.replace(token_file)

    async def new_token_accepted() -> bool:
        return (await fetch(url, token="second-token-value"))[0] == 200

    await eventually(new_token_accepted, timeout=30, interval=0.1, message="the replaced token file to be read")
    assert (await fetch(url, token="second-token-value"))[0] == 200
    assert (await fetch(url, token="first-token-value"))[0] == 403
    assert "second-token-value" not in proc.output and "first-token-value" not in proc.output


async def test_sighup_reloads_tokens_and_reopens_audit(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path
) -> None:
    """SIGHUP re-reads client token files at once and reopens the audit file after logrotate moved it."""
    sm.create_secret(Name="app/s", SecretString="v")
    token = write_token(tmp_path / "app.token", "app-token-one")
    audit = tmp_path / "audit.log"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[audit]\npath = "{audit}"\n[[clients]]\nname = "app"\ntoken = "file://{token}"\nallow = ["app/*"]\n'
    )
    port = free_port()
    proc = agent_process(["run", "--config", str(config), *base_args(moto.url, port)[1:]])
    await asyncio.to_thread(proc.wait_for, '"listening"')
    url = f"http://127.0.0.1:{port}/value/app/s"
    assert (await fetch(url, token="app-token-one"))[0] == 200
    audit.rename(tmp_path / "audit.log.1")  # what logrotate does
    token.write_text("app-token-two")
    proc.process.send_signal(signal.SIGHUP)
    await asyncio.to_thread(proc.wait_for, '"audit_reopened"')
    assert (await fetch(url, token="app-token-two"))[0] == 200
    assert (await fetch(url, token="app-token-one"))[0] == 403
    assert await asyncio.to_thread(proc.stop) == 0
    rotated = (tmp_path / "audit.log.1").read_text().splitlines()
    fresh = audit.read_text().splitlines()
    assert len(rotated) == 1 and len(fresh) == 2
    assert json.loads(fresh[0])["client"] == "app" and json.loads(fresh[1])["decision"] == "deny"
    assert "app-token" not in proc.output


async def test_malformed_token_header_never_logged(moto: MotoServer, agent_process: StartProcess) -> None:
    """A token in a header aiohttp cannot parse is not echoed into the agent's log at any level."""
    port = free_port()
    proc = agent_process(base_args(moto.url, port, "--log-level", "debug"))
    await asyncio.to_thread(proc.wait_for, '"listening"')
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Aws-Parameters-Secrets-Token: malformed-canary-token\x01\r\n\r\n")
    await writer.drain()
    await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    assert (await fetch(f"http://127.0.0.1:{port}/ping", token=None))[0] == 200
    assert await asyncio.to_thread(proc.stop) == 0
    assert "malformed-canary-token" not in proc.output
