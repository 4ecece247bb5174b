"""The SSRF guard over real TCP: order, tokens, methods, paths, connection limit, public routes."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.dev.emulator import MotoServer
from tests.support.agent import TOKEN, AgentFactory
from tests.support.waiting import eventually


async def test_token_missing_and_wrong_look_identical(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """No token and a wrong token both get the same 403 body."""
    sm.create_secret(Name="g", SecretString="v")
    async with run_agent(moto.url) as agent:
        missing = await agent.get("/v1/g", token=None)
        wrong = await agent.get("/v1/g", token=TOKEN[:-1] + "x")
        empty = await agent.get("/v1/g", token="")
    assert missing.status == wrong.status == empty.status == 403
    assert missing.body == wrong.body == empty.body
    assert missing.json()["__type"] == "AccessDeniedException"


async def test_token_headers_and_bearer(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """The token is accepted in each configured header and as Authorization: Bearer."""
    sm.create_secret(Name="g", SecretString="v")
    async with run_agent(moto.url) as agent:
        for headers in (
            {"X-Aws-Parameters-Secrets-Token": TOKEN},
            {"x-vault-token": TOKEN},
            {"Authorization": f"Bearer {TOKEN}"},
            {"Authorization": f"bearer {TOKEN}", "X-Vault-Token": "wrong"},
        ):
            reply = await agent.get("/value/g", token=None, headers=headers)
            assert reply.status == 200, headers
        assert (await agent.get("/value/g", token=None, headers={"Authorization": TOKEN})).status == 403


async def test_custom_header_list(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """auth.headers replaces the default header list (Bearer still works)."""
    sm.create_secret(Name="g", SecretString="v")
    async with run_agent(moto.url, auth__headers=["X-My-Token"]) as agent:
        assert (await agent.get("/value/g", token=None, headers={"X-My-Token": TOKEN})).status == 200
        assert (await agent.get("/value/g")).status == 403  # X-Aws-Parameters-Secrets-Token no longer read
        assert (await agent.get("/value/g", token=None, headers={"Authorization": f"Bearer {TOKEN}"})).status == 200


async def test_guard_order(moto: MotoServer, run_agent: AgentFactory) -> None:
    """X-Forwarded-For (400) before token (403) before method (405) before path (404)."""
    async with run_agent(moto.url) as agent:
        xff = {"X-Forwarded-For": "10.0.0.1"}
        assert (await agent.get("/v1/x", token=None, headers=xff)).status == 400
        assert (await agent.get("/v1/x", headers=xff)).status == 400
        assert (await agent.get("/ping", headers=xff)).status == 400
        assert (await agent.get("/nope", token=None, method="POST")).status == 403
        assert (await agent.get("/nope", method="POST")).status == 405
        assert (await agent.get("/v1/x", method="PUT")).status == 405
        assert (await agent.get("/nope", token=None)).status == 403
        not_found = await agent.get("/nope")
        assert not_found.status == 404 and not_found.json()["__type"] == "ResourceNotFoundException"


async def test_public_routes_need_no_token(moto: MotoServer, run_agent: AgentFactory) -> None:
    """/ping, /healthz, /readyz answer without a token and say nothing about secrets."""
    async with run_agent(moto.url, prefetch__secrets=["does-not-matter"]) as agent:
        await agent.wait_ready()
        ping = await agent.get("/ping", token=None)
        healthz = await agent.get("/healthz", token=None)
        readyz = await agent.get("/readyz", token=None)
        assert (ping.status, ping.text) == (200, "healthy")
        assert healthz.status == 200 and readyz.status == 200
        for reply in (ping, healthz, readyz):
            assert "does-not-matter" not in reply.text
        assert (await agent.get("/ping", method="POST", token=None)).status == 405


async def test_metrics_needs_token_unless_public(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """/metrics takes the token by default and is open with metrics.public = true."""
    async with run_agent(moto.url) as agent:
        assert (await agent.get("/metrics", token=None)).status == 403
        reply = await agent.get("/metrics")
        assert reply.status == 200 and "secrets_agent_requests_total" in reply.text
    async with run_agent(moto.url, metrics__public=True) as agent:
        assert (await agent.get("/metrics", token=None)).status == 200


async def test_metrics_count_requests_cache_and_upstream(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """Metrics count requests by route/status, cache hits/misses, upstream calls and entries."""
    sm.create_secret(Name="m", SecretString="metric-canary-value")
    async with run_agent(moto.url) as agent:
        await agent.get("/v1/m")
        await agent.get("/v1/m")
        await agent.get("/v1/absent")
        assert await agent.metric("secrets_agent_requests_total", route="v1", status="200") == 2
        assert await agent.metric("secrets_agent_requests_total", route="v1", status="404") == 1
        assert await agent.metric("secrets_agent_cache_lookups_total", outcome="hit") == 1
        assert await agent.metric("secrets_agent_cache_lookups_total", outcome="miss") == 1
        assert await agent.metric("secrets_agent_cache_lookups_total", outcome="error") == 1
        assert await agent.metric("secrets_agent_upstream_calls_total", operation="GetSecretValue", outcome="ok") == 1
        assert (
            await agent.metric(
                "secrets_agent_upstream_calls_total",
                operation="GetSecretValue",
                outcome="ResourceNotFoundException",
            )
            == 1
        )
        assert await agent.metric("secrets_agent_cache_entries") == 1
        text = (await agent.get("/metrics")).text
        assert "metric-canary-value" not in text and TOKEN not in text


async def test_connection_limit(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """Idle TCP connections filling max_connections cost TCP reads a 429, not health probes nor the socket."""
    sm.create_secret(Name="cl/s", SecretString="v")
    async with run_agent(moto.url, server__max_connections=2) as agent:
        host, port = agent.started.tcp
        connections = agent.started.components.connections
        idle = [await asyncio.open_connection(host, port) for _ in range(2)]
        await eventually(lambda: connections.open >= 2, message="the agent to count both idle connections")
        try:
            over = await agent.get("/v1/cl/s")  # a third TCP connection, over the budget
            assert over.status == 429
            assert over.json()["__type"] == "TooManyConnectionsException"
            assert over.headers.get("Connection", "").lower() == "close"
            for path in ("/ping", "/healthz", "/readyz"):
                probe = await agent.get(path, token=None)  # answered anyway, then the slot is given back
                assert probe.status in (200, 503) and probe.headers.get("Connection", "").lower() == "close", path
            assert (await agent.get("/ping", token=None)).text == "healthy"
            over_socket = await agent.get("/v1/cl/s", unix=True)  # the socket has its own budget
            assert over_socket.status == 200
        finally:
            for _reader, writer in idle:
                writer.close()
                await writer.wait_closed()
        await eventually(lambda: connections.open < 2, message="the agent to see connections close")
        assert (await agent.get("/v1/cl/s")).status == 200
