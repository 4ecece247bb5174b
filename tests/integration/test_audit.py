"""The audit trail fails closed and cannot be redirected: the real agent as a process, real files, real signals.

A full disk is simulated without privileges by lowering the agent process's
``RLIMIT_FSIZE`` to the audit file's size (``prlimit``): its next append fails
with ``EFBIG`` exactly where ``ENOSPC`` would (CPython ignores SIGXFSZ).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import REGION, TOKEN, AgentProcess, run_cli
from tests.support.waiting import eventually

StartProcess = Callable[..., AgentProcess]
REFUSED = {"__type": "AuditUnavailableException", "message": "the read could not be audited"}
CANARY = "audit-canary-value"
TIMEOUT = aiohttp.ClientTimeout(total=30)  # a hang guard


def agent_args(endpoint: str, port: int, config: Path) -> list[str]:
    return ["run", "--config", str(config), "--http-port", str(port), "--endpoint-url", endpoint, "--region", REGION]


def write_config(tmp_path: Path, audit: Path, on_failure: str | None = None) -> Path:
    config = tmp_path / "agent.toml"
    text = f'[audit]\npath = "{audit}"\n'
    if on_failure is not None:
        text += f'on_failure = "{on_failure}"\n'
    config.write_text(text)
    return config


async def start(agent_process: StartProcess, moto: MotoServer, config: Path) -> tuple[AgentProcess, str]:
    port = free_port()
    proc = agent_process(agent_args(moto.url, port, config))
    await asyncio.to_thread(proc.wait_for, '"listening"')
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(base: str) -> None:
    async def ready() -> bool:
        return (await fetch(base + "/readyz", token=None))[0] == 200

    await eventually(ready, message="/readyz to answer 200")


async def fetch(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"X-Aws-Parameters-Secrets-Token": token} if token else {}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.read()


async def metric(base: str, name: str, **labels: str) -> float:
    status, body = await fetch(base + "/metrics")
    assert status == 200, body
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@contextlib.contextmanager
def file_size_limit(pid: int, limit: int) -> Iterator[None]:
    """Writes by process ``pid`` past ``limit`` bytes fail with EFBIG (a full disk, for that process only)."""
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


def read_records(audit: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of an audit file, and any lines that are not JSON (a record torn by a failed write)."""
    records, torn = [], []
    for line in audit.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            torn.append(line)
    return records, torn


async def test_unwritable_record_refuses_the_read(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path
) -> None:
    """By default (deny) a read whose record cannot be written is refused with 503, counted, and recovers.

    The refusal is the HTTP API's JSON, or on the SDK route the SDK's form. No
    record claims a refused read was served; a record torn by the failed write
    is left on a line of its own.
    """
    sm.create_secret(Name="app/s", SecretString=CANARY)
    audit = tmp_path / "audit.log"
    proc, base = await start(agent_process, moto, write_config(tmp_path, audit))
    url = base + "/value/app/s"
    assert await fetch(url) == (200, CANARY.encode())
    await wait_ready(base)
    sdk = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=base,
        aws_access_key_id="default",
        aws_secret_access_key=TOKEN,
        config=Config(retries={"total_max_attempts": 1}),
    )
    # 10 bytes of the next record still fit: the refused read leaves a torn line behind.
    with file_size_limit(proc.process.pid, audit.stat().st_size + 10):
        status, body = await fetch(url)
        assert status == 503, body
        assert json.loads(body) == REFUSED
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            await asyncio.to_thread(sdk.get_secret_value, SecretId="app/s")
        assert refused.value.response["Error"]["Code"] == "AuditUnavailableException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert await metric(base, "secrets_agent_audit_failures_total", kind="write") == 2
        assert await metric(base, "secrets_agent_audit_healthy") == 0
        assert (await fetch(base + "/readyz", token=None))[0] == 200  # readiness follows reopens, not writes
    assert await fetch(url) == (200, CANARY.encode())
    assert await metric(base, "secrets_agent_audit_healthy") == 1
    assert await asyncio.to_thread(proc.stop) == 0
    records, torn = read_records(audit)
    assert [(r["type"], r["status"]) for r in records] == [("read", 200), ("read", 200)]
    assert len(torn) == 1 and len(torn[0]) == 10
    assert '"audit_write_failed"' in proc.output
    assert CANARY not in audit.read_text() and TOKEN not in audit.read_text()


async def test_serve_mode_answers_unrecorded_reads_and_counts_them(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path
) -> None:
    """With on_failure = "serve" a read whose record cannot be written is still 200, and counted."""
    sm.create_secret(Name="app/s", SecretString=CANARY)
    audit = tmp_path / "audit.log"
    proc, base = await start(agent_process, moto, write_config(tmp_path, audit, "serve"))
    url = base + "/value/app/s"
    assert await fetch(url) == (200, CANARY.encode())
    with file_size_limit(proc.process.pid, audit.stat().st_size):
        assert await fetch(url) == (200, CANARY.encode())
        assert await metric(base, "secrets_agent_audit_failures_total", kind="write") == 1
        assert await metric(base, "secrets_agent_audit_healthy") == 0
    assert await fetch(url) == (200, CANARY.encode())
    assert await metric(base, "secrets_agent_audit_healthy") == 1
    assert await asyncio.to_thread(proc.stop) == 0
    records, torn = read_records(audit)
    assert [r["status"] for r in records] == [200, 200] and torn == []


@pytest.mark.parametrize("on_failure", ["deny", "serve"])
async def test_failed_reopen_shows_until_a_reopen_succeeds(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path, on_failure: str
) -> None:
    """SIGHUP with the audit directory gone is a failed reopen: shown and counted until a reopen succeeds.

    The agent keeps running, /readyz is 503 saying why, and reads follow
    on_failure; once the directory is back, the next SIGHUP recovers.
    """
    sm.create_secret(Name="app/s", SecretString=CANARY)
    directory = tmp_path / "audit"
    directory.mkdir()
    audit = directory / "audit.log"
    config = write_config(tmp_path, audit, None if on_failure == "deny" else on_failure)  # deny: the default
    proc, base = await start(agent_process, moto, config)
    url = base + "/value/app/s"
    assert await fetch(url) == (200, CANARY.encode())
    await wait_ready(base)
    shutil.rmtree(directory)
    proc.process.send_signal(signal.SIGHUP)
    await asyncio.to_thread(proc.wait_for, '"audit_reopen_failed"', 30)
    status, body = await fetch(base + "/readyz", token=None)
    assert (status, body.decode()) == (503, "not ready: audit trail: reopen failed: No such file or directory")
    assert await metric(base, "secrets_agent_audit_failures_total", kind="reopen") == 1
    assert await metric(base, "secrets_agent_audit_healthy") == 0
    status, body = await fetch(url)
    if on_failure == "deny":
        assert (status, json.loads(body)) == (503, REFUSED)
    else:
        assert (status, body) == (200, CANARY.encode())
    directory.mkdir()
    proc.process.send_signal(signal.SIGHUP)
    await asyncio.to_thread(proc.wait_for, '"audit_reopened"', 30)
    await wait_ready(base)
    assert await metric(base, "secrets_agent_audit_healthy") == 1
    assert await fetch(url) == (200, CANARY.encode())
    assert await asyncio.to_thread(proc.stop) == 0
    records, _ = read_records(audit)
    assert [(r["type"], r["status"]) for r in records] == [("read", 200)]


async def test_reopen_onto_a_symlink_fails_and_leaves_its_target_alone(
    sm: Any, moto: MotoServer, agent_process: StartProcess, tmp_path: Path
) -> None:
    """A symlink planted at the audit path before SIGHUP is not followed: a failed reopen, reads refused."""
    sm.create_secret(Name="app/s", SecretString=CANARY)
    audit = tmp_path / "audit.log"
    target = tmp_path / "precious"
    target.write_text("precious\n")
    target.chmod(0o644)
    proc, base = await start(agent_process, moto, write_config(tmp_path, audit))
    url = base + "/value/app/s"
    assert await fetch(url) == (200, CANARY.encode())
    await wait_ready(base)
    audit.rename(tmp_path / "audit.log.1")
    audit.symlink_to(target)
    proc.process.send_signal(signal.SIGHUP)
    await asyncio.to_thread(proc.wait_for, '"audit_reopen_failed"', 30)
    status, body = await fetch(base + "/readyz", token=None)
    assert status == 503 and "symbolic link" in body.decode()
    status, body = await fetch(url)
    assert (status, json.loads(body)) == (503, REFUSED)
    assert await asyncio.to_thread(proc.stop) == 0
    assert target.read_text() == "precious\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    # The old (renamed) file still got the refused read's record, as the status the caller saw.
    records, _ = read_records(tmp_path / "audit.log.1")
    assert [r["status"] for r in records] == [200, 503]


def plant_symlink(audit: Path, target: Path) -> Path | None:
    audit.symlink_to(target)
    return target


def plant_dangling_symlink(audit: Path, target: Path) -> Path | None:
    target.unlink()
    audit.symlink_to(target)
    return None  # must still not exist afterwards


def plant_hard_link(audit: Path, target: Path) -> Path | None:
    os.link(target, audit)
    return target


def plant_fifo(audit: Path, target: Path) -> Path | None:
    os.mkfifo(audit, 0o600)  # opening it for writing would wait for a reader
    return target


def plant_other_owners_file(audit: Path, target: Path) -> Path | None:
    target.rename(audit)
    os.chown(audit, 65534, 65534)
    return audit


@pytest.mark.parametrize(
    "plant",
    [
        plant_symlink,
        plant_dangling_symlink,
        plant_hard_link,
        plant_fifo,
        pytest.param(
            plant_other_owners_file,
            marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root"),
        ),
    ],
)
async def test_redirected_audit_path_refuses_to_start(
    moto: MotoServer, tmp_path: Path, plant: Callable[[Path, Path], Path | None]
) -> None:
    """A symlink (even dangling), hard link, FIFO or another uid's file at audit.path: exit 2 naming audit.path.

    The file the trail would have gone to is untouched (content, mode, owner;
    or, for a dangling symlink, still absent).
    """
    audit = tmp_path / "audit.log"
    target = tmp_path / "precious"
    target.write_text("precious\n")
    target.chmod(0o644)
    kept = plant(audit, target)
    before = None if kept is None else os.stat(kept)
    config = write_config(tmp_path, audit)
    result = await asyncio.to_thread(run_cli, agent_args(moto.url, free_port(), config), None, 20)
    assert result.returncode == 2, result.stderr
    assert f"audit.path: {audit}: " in result.stderr
    if kept is None or before is None:
        assert not target.exists()
    else:
        after = os.stat(kept)
        assert kept.read_text() == "precious\n"
        assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_size) == (0o644, before.st_uid, before.st_size)
