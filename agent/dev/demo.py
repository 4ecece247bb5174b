"""``secrets-agent demo``: the agent end to end with nothing but this repository.

Starts ``moto_server`` as the upstream, creates sample secrets (a JSON database
credential, a plain API key, a binary key), rotates the API key every
``rotate_seconds`` with PutSecretValue, and runs the agent on port 2773 and a
Unix socket in a temporary directory. Ctrl-C stops the agent, the rotation and
moto, and removes the temporary directory.

This module sits at the CLI layer (beside ``cli.py``): it is the one place
besides ``cli`` that drives ``runner``, and it sets fake AWS credentials in its
own process environment so a developer's real profile never reaches moto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from typing import Any

import boto3
import uvloop

from agent.config import load_settings
from agent.core import log as agent_log
from agent.core.log import get_logger
from agent.dev.emulator import MotoServer
from agent.server.lifecycle import Started, serve

log = get_logger("agent.dev.demo")

REGION = "us-east-1"
DB_SECRET = "demo/db"
API_SECRET = "demo/api-key"
BINARY_SECRET = "demo/tls-key"


def _seed(client: Any) -> None:
    client.create_secret(
        Name=DB_SECRET,
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "host": "db.internal",
                "port": 5432,
                "username": "app",
                "password": secrets.token_urlsafe(16),
            }
        ),
    )
    client.create_secret(Name=API_SECRET, SecretString=f"api-{secrets.token_hex(12)}")
    client.create_secret(Name=BINARY_SECRET, SecretBinary=secrets.token_bytes(32))


async def _rotate_forever(client: Any, every: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        await loop.run_in_executor(
            None, lambda: client.put_secret_value(SecretId=API_SECRET, SecretString=f"api-{secrets.token_hex(12)}")
        )
        log.info("demo_rotated", secret_id=API_SECRET)


def _banner(started: Started, token_path: str, moto_url: str, rotate_seconds: float) -> str:
    host, port = started.tcp
    base = f"http://{host}:{port}"
    header = '"X-Aws-Parameters-Secrets-Token: $TOKEN"'  # double quotes, so the shell expands $TOKEN
    lines = [
        "",
        "secrets-agent demo is running (Ctrl-C stops everything)",
        f"  upstream (moto_server): {moto_url}",
        f"  agent:                  {base}  and  unix socket {started.unix_socket}",
        f"  token file:             {token_path}",
        f"  {API_SECRET} rotates every {rotate_seconds:g}s",
        "",
        "Try, in another shell:",
        f"  TOKEN=$(cat {token_path})",
        f"  curl -s -H {header} '{base}/secretsmanager/get?secretId={DB_SECRET}'",
        f"  curl -s -H {header} {base}/v1/{API_SECRET}",
        f"  curl -s -H {header} '{base}/value/{DB_SECRET}?field=password'",
        f"  curl -s -H {header} {base}/value/{BINARY_SECRET} | xxd | head -2",
        f"  curl -s --unix-socket {started.unix_socket} -H {header} http://localhost/value/{API_SECRET}",
        f"  curl -s {base}/readyz; curl -s -H {header} {base}/metrics | grep secrets_agent_cache",
        f"  curl -s -H {header} {base}/status        # rotations, health and readers (JSON)",
        f"  SECRETS_AGENT_TOKEN=$TOKEN secrets-agent status --watch --http-port {port}",
        "",
        f"Open {base}/ui in a browser and paste the token: the rotation timeline.",
        "",
    ]
    return "\n".join(lines)


def run_demo(*, port: int = 2773, rotate_seconds: float = 30.0) -> int:
    """Run the demo until interrupted; returns the process exit code."""
    workdir = tempfile.mkdtemp(prefix="secrets-agent-demo-")
    os.chmod(workdir, 0o700)
    # moto accepts any credentials; fixed fake ones keep a developer's real
    # profile out of the demo entirely.
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "demo"})
    token_path = os.path.join(workdir, "token")
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    moto = MotoServer()
    try:
        moto.start()
        client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
        _seed(client)
        settings = load_settings(
            environ={},
            overrides={
                "server.http_port": port,
                "server.unix_socket": os.path.join(workdir, "agent.sock"),
                "auth.token": f"file://{token_path}",
                "aws.region": REGION,
                "aws.endpoint_url": moto.url,
                "prefetch.secrets": [DB_SECRET, API_SECRET, BINARY_SECRET],
            },
            stdout_is_tty=sys.stdout.isatty(),
        )
        agent_log.configure(settings.log.level, settings.log.format)

        async def main() -> None:
            rotation = asyncio.create_task(_rotate_forever(client, rotate_seconds))

            def announce(started: Started) -> None:
                print(_banner(started, token_path, moto.url, rotate_seconds), flush=True)

            try:
                await serve(settings, on_started=announce)
            finally:
                rotation.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rotation

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("demo stopped", flush=True)
    return 0
