"""`secrets-agent demo` end to end, as a newcomer runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import aiohttp

from agent.dev.emulator import free_port
from tests.support.waiting import eventually


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_demo_serves_rotates_and_cleans_up() -> None:
    """The demo prints working curl lines, serves on TCP and the socket, rotates; Ctrl-C leaves nothing behind."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "demo", "--port", str(port), "--rotate-seconds", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def banner_printed() -> bool:
        """The banner has been read up to the blank line that ends it."""
        assert process.poll() is None, "".join(lines)
        text = "".join(lines)
        start = text.find("Try, in another shell")
        return start >= 0 and "\n\n" in text[start:]

    try:
        await eventually(banner_printed, timeout=40, interval=0.1, message=lambda: "the banner in:\n" + "".join(lines))
        output = "".join(lines)
        token_path = re.search(r"token file:\s+(\S+)", output).group(1)  # type: ignore[union-attr]
        sock = re.search(r"unix socket (\S+)", output).group(1)  # type: ignore[union-attr]
        moto_port = int(re.search(r"moto_server\): http://127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/secretsmanager/get?secretId=demo/db" in output
        assert f"--unix-socket {sock}" in output
        with open(token_path) as fh:
            token = fh.read().strip()
        headers = {"X-Aws-Parameters-Secrets-Token": token}
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers=headers) as tcp:
            async with tcp.get(f"{base}/secretsmanager/get?secretId=demo/db") as reply:
                assert reply.status == 200
                assert "password" in json.loads((await reply.json())["SecretString"])
            async with tcp.get(f"{base}/value/demo/tls-key") as reply:
                assert reply.headers["Content-Type"] == "application/octet-stream" and len(await reply.read()) == 32
            async with tcp.get(f"{base}/v1/demo/api-key?refreshNow=true") as reply:
                first = (await reply.json())["VersionId"]

            async def rotated() -> bool:
                async with tcp.get(f"{base}/v1/demo/api-key?refreshNow=true") as reply:
                    return bool((await reply.json())["VersionId"] != first)

            await eventually(rotated, timeout=30, interval=0.2, message="rotation did not happen")
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock), headers=headers) as unix,
            unix.get("http://localhost/value/demo/db?field=username") as reply,
        ):
            assert await reply.text() == "app"
        if shutil.which("curl"):
            # The printed lines, run as a newcomer would paste them into bash.
            lines = output.splitlines()
            token_line = next(line.strip() for line in lines if line.strip().startswith("TOKEN=$(cat "))
            expected = ['"ARN"', '"VersionId"', "", "api-", "ready", '"secrets"']
            curls = [line.strip() for line in lines if line.strip().startswith("curl ") and "xxd" not in line]
            assert len(curls) == len(expected)
            for command, needle in zip(curls, expected, strict=True):
                result = await asyncio.to_thread(
                    subprocess.run,
                    ["bash", "-c", f"{token_line}; {command}"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                assert result.returncode == 0, (command, result.stderr)
                assert needle in result.stdout and "__type" not in result.stdout, (command, result.stdout)
                assert result.stdout.strip(), command
        assert _port_open(moto_port)
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 20) == 0
        assert not _port_open(moto_port), "moto_server left running"
        assert not _port_open(port)
        assert not os.path.exists(token_path) and not os.path.exists(sock)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
