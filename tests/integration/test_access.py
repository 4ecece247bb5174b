"""Access control and audit over both listeners: clients, policies, rate limits, the audit trail."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.dev.emulator import MotoServer
from tests.support.agent import TOKEN, AgentFactory, run_cli
from tests.support.configs import write_token
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

BILLING = "billing-" + "a1" * 12
WEB = "web-" + "b2" * 12


def token_file(tmp_path: Path, name: str, value: str) -> str:
    return f"file://{write_token(tmp_path / name, value)}"


def clients_config(tmp_path: Path, *, extra: str = "", audit: Path | None = None) -> str:
    """billing and web by token, 'local' by this process's uid, with different grants."""
    text = f"""
[[clients]]
name = "billing"
token = "{token_file(tmp_path, "billing", BILLING)}"
allow = ["billing/*", "shared/*"]

[[clients]]
name = "web"
token = "{token_file(tmp_path, "web", WEB)}"
allow = ["web/*"]

[[clients]]
name = "local"
uid = {os.getuid()}
allow = ["local/*"]

[[secret_policies]]
secret = "shared/web-too"
readers = ["web"]

[[secret_policies]]
secret = "shared/secret-of-billing"
deny = ["billing"]
{extra}
"""
    if audit is not None:
        text += f'\n[audit]\npath = "{audit}"\n'
    return text


@pytest.fixture
def secrets_for_clients(sm: Any) -> None:
    for name in ("billing/db", "web/api", "local/key", "shared/web-too", "shared/secret-of-billing"):
        sm.create_secret(Name=name, SecretString=f"value-of-{name}")


async def test_each_client_reads_exactly_what_it_may(
    secrets_for_clients: None, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """Token clients and a uid client each read their own secrets, over TCP and the Unix socket, and nothing else."""
    expected = {
        ("billing", "billing/db"): 200,
        ("billing", "web/api"): 403,
        ("billing", "shared/web-too"): 200,
        ("billing", "shared/secret-of-billing"): 403,  # resource deny beats the identity allow
        ("web", "web/api"): 200,
        ("web", "billing/db"): 403,
        ("web", "shared/web-too"): 200,  # resource policy grants what the identity policy does not
        ("web", "local/key"): 403,
    }
    tokens = {"billing": BILLING, "web": WEB}
    async with run_agent(moto.url, config=clients_config(tmp_path), shared_token=False, metrics__public=True) as agent:
        for unix in (False, True):
            for (client, secret), status in expected.items():
                reply = await agent.get(f"/value/{secret}", token=tokens[client], unix=unix)
                assert reply.status == status, (client, secret, unix, reply.text)
                if status == 200:
                    assert reply.text == f"value-of-{secret}"
        # The uid client: recognised by the kernel on the socket, with no token at all.
        assert (await agent.get("/value/local/key", token=None, unix=True)).text == "value-of-local/key"
        assert (await agent.get("/value/web/api", token=None, unix=True)).status == 403
        assert (await agent.get("/value/local/key", token=None)).status == 403  # no peer credentials on TCP
        assert await agent.metric("secrets_agent_reads_total", client="local", decision="allow") == 1
        assert await agent.metric("secrets_agent_reads_total", client="billing", decision="deny") == 4
        assert await agent.metric("secrets_agent_auth_failures_total", reason="missing_token") == 1
        # Without a shared token there is no default client.
        assert (await agent.get("/value/billing/db", token=TOKEN)).status == 403
        assert await agent.metric("secrets_agent_auth_failures_total", reason="wrong_token") >= 1


async def test_denial_is_uniform_and_costs_no_upstream_call(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """A denied read is 403 AccessDeniedException, one body whether or not the secret exists, no upstream call."""
    sm.create_secret(Name="web/api", SecretString="v")
    async with run_agent(proxy.url, config=clients_config(tmp_path), shared_token=False) as agent:
        exists = await agent.get("/value/web/api", token=BILLING)
        missing = await agent.get("/value/web/nothing-here", token=BILLING)
        by_arn = await agent.get(
            "/v1/arn:aws:secretsmanager:us-east-1:123456789012:secret:web/api-AbCdEf", token=BILLING
        )
    assert exists.status == missing.status == by_arn.status == 403
    assert exists.body == missing.body == by_arn.body
    assert exists.json()["__type"] == "AccessDeniedException"
    assert sum(proxy.calls[op] for op in ("GetSecretValue", "DescribeSecret", "BatchGetSecretValue")) == 0


async def test_default_client_reads_all_unless_resource_denied(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """The shared token stays a 'default' client that may read everything; a resource deny still applies."""
    for name in ("billing/db", "locked/x"):
        sm.create_secret(Name=name, SecretString="v")
    extra = '\n[[secret_policies]]\nsecret = "locked/*"\ndeny = ["default"]\n'
    async with run_agent(moto.url, config=clients_config(tmp_path, extra=extra)) as agent:
        assert (await agent.get("/value/billing/db", token=TOKEN)).status == 200
        assert (await agent.get("/value/locked/x", token=TOKEN)).status == 403


async def test_rate_limit(sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path) -> None:
    """Past rate_per_second a client gets 429; other clients are unaffected."""
    sm.create_secret(Name="web/api", SecretString="v")
    config = clients_config(tmp_path).replace('allow = ["web/*"]', 'allow = ["web/*"]\nrate_per_second = 2')
    async with run_agent(moto.url, config=config, shared_token=False, metrics__public=True) as agent:
        statuses = [(await agent.get("/value/web/api", token=WEB)).status for _ in range(10)]
        assert statuses.count(429) >= 5 and 200 in statuses
        limited = await agent.get("/value/web/api", token=WEB)
        if limited.status == 429:
            assert limited.json()["__type"] == "TooManyRequestsException"
        assert (await agent.get("/value/shared/web-too", token=BILLING)).status in (200, 404)
        assert await agent.metric("secrets_agent_rate_limited_total", client="web") >= 5


async def test_audit_trail(sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path) -> None:
    """Allowed and denied reads and a rotation are audited with their fields, never a value or token, mode 0600."""
    sm.create_secret(Name="billing/db", SecretString="audit-canary-value-1")
    audit = tmp_path / "audit.log"
    async with run_agent(moto.url, config=clients_config(tmp_path, audit=audit), shared_token=False) as agent:
        assert (await agent.get("/v1/billing/db", token=BILLING)).status == 200
        assert (await agent.get("/value/billing/db", token=WEB)).status == 403
        assert (await agent.get("/value/billing/db", token="wrong-token-canary")).status == 403
        sm.put_secret_value(SecretId="billing/db", SecretString="audit-canary-value-2")
        assert (await agent.get("/value/billing/db?refreshNow=true", unix=True, token=BILLING)).status == 200
    assert (audit.stat().st_mode & 0o777) == 0o600
    text = audit.read_text()
    for needle in ("audit-canary-value", BILLING, WEB, "wrong-token-canary", TOKEN):
        assert needle not in text
    records = [json.loads(line) for line in text.splitlines()]
    reads = [r for r in records if r["type"] == "read"]
    assert [(r["client"], r["decision"], r["status"]) for r in reads] == [
        ("billing", "allow", 200),
        ("web", "deny", 403),
        (None, "deny", 403),
        ("billing", "allow", 200),
    ]
    first, _, _, refreshed = reads
    assert first["listener"] == "tcp" and first["name"] == "billing/db" and first["arn"].endswith(first["arn"][-6:])
    assert first["version_stage"] == "AWSCURRENT" and first["version_id"] and first["cache"] == "miss"
    assert refreshed["listener"] == "unix" and refreshed["peer_uid"] == os.getuid() and refreshed["peer_pid"] > 0
    assert refreshed["cache"] == "refresh" and refreshed["version_id"] != first["version_id"]
    assert all("time" in r for r in records)
    rotations = [r for r in records if r["type"] == "rotation"]
    assert len(rotations) == 1
    assert rotations[0]["old_version"] == first["version_id"]
    assert rotations[0]["new_version"] == refreshed["version_id"] and rotations[0]["how"] == "refreshNow"
    summary = await asyncio.to_thread(run_cli, ["audit", str(audit)])
    assert summary.returncode == 0
    assert "billing" in summary.stdout and "denials: 2" in summary.stdout and "refreshNow" in summary.stdout


async def test_poll_rotation_is_audited(sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path) -> None:
    """A rotation found by polling is audited with how=poll."""
    sm.create_secret(Name="billing/db", SecretString="one")
    audit = tmp_path / "audit.log"
    async with run_agent(
        moto.url,
        config=clients_config(tmp_path, audit=audit),
        refresh__interval_seconds=1,
        prefetch__secrets=["billing/db"],
    ) as agent:
        await agent.wait_ready()
        sm.put_secret_value(SecretId="billing/db", SecretString="two")

        async def rotated() -> bool:
            return (await agent.get("/value/billing/db", token=BILLING)).text == "two"

        await eventually(rotated, timeout=30, interval=0.1, message="the agent to serve the rotated value")
    rotations = [json.loads(line) for line in audit.read_text().splitlines() if '"rotation"' in line]
    assert [r["how"] for r in rotations] == ["poll"]


def test_check_config_warns_about_policies_that_never_match(tmp_path: Path) -> None:
    """check-config warns about unknown client names and patterns that match no prefetched secret."""
    path = tmp_path / "agent.toml"
    path.write_text(
        '[prefetch]\nsecrets = ["prod/db"]\n'
        '[[clients]]\nname = "app"\ntoken = "env:T"\nallow = ["prod/*", "prdo/*"]\n'
        '[[secret_policies]]\nsecret = "prod/db"\nreaders = ["ap"]\n'
    )
    result = run_cli(["check-config", "--config", str(path)], {"T": "t0k3n"})
    assert result.returncode == 0, result.stderr
    assert "'ap'" in result.stderr and "'prdo/*'" in result.stderr
    assert "'prod/*'" not in result.stderr


async def test_upstream_failure_burst_is_audited(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """A run of transient upstream failures is one audit record when it starts and one when it ends."""
    from tests.support.faultproxy import Fault

    sm.create_secret(Name="billing/db", SecretString="v")
    audit = tmp_path / "audit.log"
    async with run_agent(proxy.url, config=clients_config(tmp_path, audit=audit), shared_token=False) as agent:
        proxy.add(Fault("GetSecretValue", "error", status=503, code="ServiceUnavailable", times=1))
        first = await agent.get("/value/billing/db", token=BILLING)
        assert first.status == 502, (proxy.calls, proxy.faults)
        proxy.add(Fault("DescribeSecret", "error", status=500, code="InternalServiceError", times=1))
        await asyncio.sleep(1.1)  # deliberate: let this key's read backoff window pass, so the next read goes upstream
        assert (await agent.get("/value/billing/db", token=BILLING)).status == 200
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [r["type"] for r in records if r["type"].startswith("upstream")]
    assert kinds == ["upstream_failure_started", "upstream_failure_ended"]
    ended = next(r for r in records if r["type"] == "upstream_failure_ended")
    assert ended["failures"] == 1 and ended["first_error"] == "ServiceUnavailable"


async def test_partial_arn_cannot_widen_an_allow(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """allow = ["prod/db"] does not open prod/db-backup when it is asked for by partial ARN."""
    sm.create_secret(Name="prod/db", SecretString="db")
    backup = sm.create_secret(Name="prod/db-backup", SecretString="backup-canary")["ARN"]
    token = token_file(tmp_path, "narrow", "narrow-token-value")
    config = f'[[clients]]\nname = "narrow"\ntoken = "{token}"\nallow = ["prod/db"]\n'
    partial = backup.rsplit("-", 1)[0]  # arn:...:secret:prod/db-backup
    async with run_agent(moto.url, config=config, shared_token=False) as agent:
        assert (await agent.get("/value/prod/db", token="narrow-token-value")).text == "db"
        for path in (f"/v1/{partial}", f"/v1/{backup}", "/value/prod/db-backup"):
            reply = await agent.get(path, token="narrow-token-value")
            assert reply.status == 403, (path, reply.text)
            assert "backup-canary" not in reply.text
