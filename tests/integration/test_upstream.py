"""Upstream behaviour: error mapping through the fault proxy, prefetch, and role assumption."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.dev.emulator import MotoServer, free_port
from tests.support.agent import AgentFactory
from tests.support.faultproxy import Fault, FaultProxy


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault("GetSecretValue", "error", status=400, code="AccessDeniedException"), 403, "AccessDeniedException"),
        (Fault("GetSecretValue", "error", status=400, code="ThrottlingException"), 429, "ThrottlingException"),
        (Fault("GetSecretValue", "error", status=500, code="InternalServiceError"), 502, "InternalServiceError"),
        (Fault("GetSecretValue", "error", status=503, code="ServiceUnavailable"), 502, "ServiceUnavailable"),
        (Fault("GetSecretValue", "drop"), 502, "ServiceUnavailable"),
        (Fault("GetSecretValue", "hang"), 504, "RequestTimeout"),
        (Fault("GetSecretValue", "error", status=400, code="DecryptionFailure"), 400, "DecryptionFailure"),
        (Fault("GetSecretValue", "error", status=400, code="InvalidRequestException"), 400, "InvalidRequestException"),
    ],
    ids=["denied", "throttled", "5xx", "503", "dropped", "timeout", "decryption", "invalid-request"],
)
async def test_upstream_error_mapping(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory, fault: Fault, status: int, code: str
) -> None:
    """Each upstream failure maps to its documented status and an AWS-style error body."""
    sm.create_secret(Name="e", SecretString="error-canary-value")
    proxy.add(fault)
    async with run_agent(proxy.url, aws__read_timeout_seconds=1) as agent:
        reply = await agent.get("/v1/e")
    assert reply.status == status, reply.text
    body = reply.json()
    assert set(body) == {"__type", "message"}
    assert body["__type"] == code
    assert "error-canary-value" not in reply.text


async def test_not_found_and_invalid_parameter(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A missing secret is 404 ResourceNotFoundException; a malformed versionId is 400."""
    sm.create_secret(Name="p", SecretString="v")
    async with run_agent(moto.url) as agent:
        missing = await agent.get("/secretsmanager/get?secretId=nope")
        bad_version = await agent.get("/v1/p?versionId=short")
        no_stage = await agent.get("/v1/p?versionStage=NOSUCHSTAGE")
    assert missing.status == 404 and missing.json()["__type"] == "ResourceNotFoundException"
    assert bad_version.status == 400 and bad_version.json()["__type"] == "InvalidParameterException"
    assert no_stage.status == 404


async def test_unreachable_upstream_is_502(run_agent: AgentFactory) -> None:
    """With nothing listening at the endpoint a read is 502 and the agent keeps serving."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with run_agent(endpoint, aws__validate_credentials=False) as agent:
        reply = await agent.get("/v1/anything")
        assert reply.status == 502 and reply.json()["__type"] == "ServiceUnavailable"
        assert (await agent.get("/ping", token=None)).status == 200


async def test_prefetch_batches_of_twenty(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """45 prefetched ids take 3 BatchGetSecretValue calls, then reads need no upstream call."""
    names = [f"pre/{i:02d}" for i in range(45)]
    for name in names:
        sm.create_secret(Name=name, SecretString=f"value-{name}")
    async with run_agent(proxy.url, prefetch__secrets=names) as agent:
        await agent.wait_ready()
        assert proxy.calls["BatchGetSecretValue"] == 3
        replies = await asyncio.gather(*(agent.get(f"/value/{name}") for name in names))
    assert [r.text for r in replies] == [f"value-{name}" for name in names]
    assert {r.headers["X-Cache"] for r in replies} == {"hit"}
    assert proxy.calls["GetSecretValue"] == 0


async def test_prefetch_failures_logged_not_fatal(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """An id that does not exist is logged by name; the rest load and the agent is ready."""
    sm.create_secret(Name="good", SecretString="v")
    with capture_logs() as logs:
        async with run_agent(moto.url, prefetch__secrets=["good", "ghost/secret"]) as agent:
            await agent.wait_ready()
            assert (await agent.get("/value/good")).headers["X-Cache"] == "hit"
    failures = [e for e in logs if e["event"] == "prefetch_failed"]
    assert [f["secret_id"] for f in failures] == ["ghost/secret"]
    assert failures[0]["error"] == "ResourceNotFoundException"


async def test_prefetch_by_prefix_and_tag(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """name_prefixes and tags (key=value, key) select what is prefetched; others are not."""
    sm.create_secret(Name="prod/a", SecretString="a")
    sm.create_secret(Name="prod/b", SecretString="b")
    sm.create_secret(Name="dev/c", SecretString="c", Tags=[{"Key": "team", "Value": "pay"}])
    sm.create_secret(Name="dev/d", SecretString="d", Tags=[{"Key": "team", "Value": "ops"}])
    sm.create_secret(Name="dev/e", SecretString="e", Tags=[{"Key": "critical", "Value": "yes"}])
    sm.create_secret(Name="dev/f", SecretString="f")
    async with run_agent(
        proxy.url, prefetch__name_prefixes=["prod/"], prefetch__tags=["team=pay", "critical"]
    ) as agent:
        await agent.wait_ready()
        hits = {
            name: (await agent.get(f"/value/{name}")).headers["X-Cache"]
            for name in ("prod/a", "prod/b", "dev/c", "dev/e")
        }
        assert set(hits.values()) == {"hit"}, hits
        assert proxy.calls["GetSecretValue"] == 0
        assert (await agent.get("/value/dev/d")).headers["X-Cache"] == "miss"
        assert (await agent.get("/value/dev/f")).headers["X-Cache"] == "miss"


async def test_readyz_waits_for_prefetch(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """/readyz is 503 while prefetch runs and 200 once it has finished; reads work meanwhile."""
    sm.create_secret(Name="slow", SecretString="v")
    sm.create_secret(Name="other", SecretString="o")
    proxy.add(Fault("BatchGetSecretValue", "delay", seconds=1.5))
    async with run_agent(proxy.url, prefetch__secrets=["slow"]) as agent:
        early = await agent.get("/readyz", token=None)
        assert early.status == 503
        assert (await agent.get("/value/other")).status == 200
        await agent.wait_ready()


async def test_assume_role(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """With aws.role_arn the agent reads as the assumed role, via botocore's assume-role credentials."""
    sm.create_secret(Name="r", SecretString="v")
    role = "arn:aws:iam::123456789012:role/secrets-reader"
    with capture_logs() as logs:
        async with run_agent(proxy.url, aws__role_arn=role) as agent:
            assert (await agent.get("/value/r")).text == "v"
    assert proxy.calls["AssumeRole"] == 1
    identities = [e for e in logs if e["event"] == "aws_identity"]
    assert "assumed-role/secrets-reader" in identities[0]["arn"]
