"""Reads over real HTTP against moto: AWS-agent compatible shapes, plain values, versions."""

from __future__ import annotations

import base64
import json
from typing import Any

from agent.dev.emulator import MotoServer
from tests.support.agent import AgentFactory
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually


async def test_get_query_returns_getsecretvalue_shape(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """/secretsmanager/get answers with ARN, Name, VersionId, SecretString, VersionStages, CreatedDate."""
    created = sm.create_secret(Name="app/db", SecretString='{"user":"app","password":"pw1"}')
    async with run_agent(moto.url) as agent:
        reply = await agent.get("/secretsmanager/get?secretId=app/db")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"ARN", "Name", "VersionId", "SecretString", "VersionStages", "CreatedDate"}
    assert body["ARN"] == created["ARN"] and body["Name"] == "app/db"
    assert body["VersionId"] == created["VersionId"]
    assert json.loads(body["SecretString"])["password"] == "pw1"
    assert body["VersionStages"] == ["AWSCURRENT"]
    assert float(body["CreatedDate"]) > 1_600_000_000


async def test_v1_path_with_slashes_and_arn_aliases(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """/v1/<id> takes ids with '/', and name, ARN and partial ARN share one upstream fetch."""
    arn = sm.create_secret(Name="team/svc/api", SecretString="k-123")["ARN"]
    async with run_agent(proxy.url) as agent:
        by_name = await agent.get("/v1/team/svc/api")
        by_arn = await agent.get(f"/v1/{arn}")
        by_partial = await agent.get(f"/secretsmanager/get?secretId={arn[:-7]}")
    assert by_name.status == by_arn.status == by_partial.status == 200
    assert by_name.body == by_arn.body == by_partial.body
    assert by_name.headers["X-Cache"] == "miss" and by_arn.headers["X-Cache"] == "hit"
    assert by_partial.headers["X-Cache"] == "hit"
    assert proxy.calls["GetSecretValue"] == 1


async def test_binary_secret(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A binary secret is base64 SecretBinary in JSON and raw octets from /value."""
    raw = bytes(range(256))
    sm.create_secret(Name="bin", SecretBinary=raw)
    async with run_agent(moto.url) as agent:
        as_json = await agent.get("/v1/bin")
        as_value = await agent.get("/value/bin")
    assert "SecretString" not in as_json.json()
    assert base64.b64decode(as_json.json()["SecretBinary"]) == raw
    assert as_value.headers["Content-Type"] == "application/octet-stream"
    assert as_value.body == raw


async def test_value_route_plain_and_field(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """/value returns the string itself; ?field= returns one JSON key; errors are precise."""
    sm.create_secret(Name="db", SecretString='{"password":"s3cr3t","port":5432}')
    sm.create_secret(Name="plain", SecretString="just-a-string")
    async with run_agent(moto.url) as agent:
        whole = await agent.get("/value/plain")
        field = await agent.get("/value/db?field=password")
        number = await agent.get("/value/db?field=port")
        missing = await agent.get("/value/db?field=nope")
        not_json = await agent.get("/value/plain?field=password")
    assert (whole.status, whole.text) == (200, "just-a-string")
    assert whole.headers["Content-Type"].startswith("text/plain")
    assert (field.status, field.text) == (200, "s3cr3t")
    assert (number.status, number.text) == (200, "5432")
    assert missing.status == 404 and missing.json()["__type"] == "FieldNotFoundException"
    assert not_json.status == 400 and "JSON" in not_json.json()["message"]


async def test_version_id_and_stage(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """versionId and versionStage select versions; AWSPREVIOUS stays readable after a put."""
    first = sm.create_secret(Name="rot", SecretString="one")["VersionId"]
    second = sm.put_secret_value(SecretId="rot", SecretString="two")["VersionId"]
    async with run_agent(moto.url) as agent:
        current = (await agent.get("/v1/rot")).json()
        previous = (await agent.get("/v1/rot?versionStage=AWSPREVIOUS")).json()
        by_id = (await agent.get(f"/secretsmanager/get?secretId=rot&versionId={first}")).json()
    assert (current["VersionId"], current["SecretString"]) == (second, "two")
    assert (previous["VersionId"], previous["SecretString"]) == (first, "one")
    assert by_id["SecretString"] == "one" and "AWSPREVIOUS" in by_id["VersionStages"]


async def test_refresh_now_bypasses_cache(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A cached value is served until refreshNow=true fetches and stores the new one."""
    sm.create_secret(Name="r", SecretString="old")
    async with run_agent(proxy.url) as agent:
        assert (await agent.get("/value/r")).text == "old"
        sm.put_secret_value(SecretId="r", SecretString="new")
        assert (await agent.get("/value/r")).text == "old"
        refreshed = await agent.get("/v1/r?refreshNow=true")
        assert refreshed.json()["SecretString"] == "new" and refreshed.headers["X-Cache"] == "refresh"
        assert (await agent.get("/value/r?refreshNow=TRUE")).text == "new"
        assert (await agent.get("/value/r")).text == "new"
        assert (await agent.get("/value/r?refreshNow=false")).headers["X-Cache"] == "hit"
    assert proxy.calls["GetSecretValue"] == 3


async def test_ttl_bounds_unconfirmed_serving(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """With ttl_seconds=1 a value older than a second is revalidated (and re-read) on the next read."""
    import asyncio

    sm.create_secret(Name="t", SecretString="v1")
    async with run_agent(proxy.url, cache__ttl_seconds=1) as agent:
        assert (await agent.get("/value/t")).text == "v1"
        sm.put_secret_value(SecretId="t", SecretString="v2")
        await asyncio.sleep(1.2)  # deliberate: let the 1 s TTL lapse
        expired = await agent.get("/value/t")  # answered at once from cache while it revalidates
        assert (expired.text, expired.headers["X-Cache"]) == ("v1", "revalidating")

        async def fetched_again() -> bool:
            return (await agent.get("/value/t")).text == "v2"

        await eventually(fetched_again, message="the revalidation to fetch v2")
    assert proxy.calls["GetSecretValue"] == 2


async def test_bad_query_parameters(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """Missing secretId, unknown parameters, repeats and bad refreshNow get a 400 naming the parameter."""
    sm.create_secret(Name="q", SecretString="v")
    async with run_agent(moto.url) as agent:
        cases = {
            "/secretsmanager/get": "secretId",
            "/secretsmanager/get?secretId=": "secretId",
            "/secretsmanager/get?secretId=q&colour=red": "colour",
            "/v1/q?secretId=q": "secretId",
            "/v1/q?refreshNow=maybe": "refreshNow",
            "/v1/q?versionStage=A&versionStage=B": "versionStage",
            "/value/q?field=a&bogus=1": "bogus",
            "/v1/q?versionId=": "versionId",
        }
        for path, parameter in cases.items():
            reply = await agent.get(path)
            assert reply.status == 400, (path, reply.status)
            body = reply.json()
            assert body["__type"] == "InvalidParameterException"
            assert parameter in body["message"], (path, body)


async def test_concurrent_misses_single_upstream_call(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Many simultaneous first reads of one secret over HTTP cause one GetSecretValue."""
    import asyncio

    from tests.support.faultproxy import Fault

    sm.create_secret(Name="hot", SecretString="v")
    proxy.add(Fault("GetSecretValue", "delay", seconds=0.3))
    async with run_agent(proxy.url) as agent:
        replies = await asyncio.gather(*(agent.get("/value/hot") for _ in range(30)))
    assert {r.status for r in replies} == {200}
    assert proxy.calls["GetSecretValue"] == 1
