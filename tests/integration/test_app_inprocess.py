"""Handlers and middleware in-process: the real app around a fake source, no moto and no child process."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.access.audit import AuditLog
from agent.config import Settings, load_settings
from agent.core.metrics import Metrics
from agent.server.app import create_app
from agent.server.lifecycle import build_components
from tests.support.configs import write_token
from tests.support.fakes import FakeSource

TOKEN = "in-process-" + "d4" * 12
HEADER = {"X-Aws-Parameters-Secrets-Token": TOKEN}
ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def settings(**overrides: Any) -> Settings:
    values = {"aws.region": "us-east-1", **{k.replace("__", "."): v for k, v in overrides.items()}}
    return load_settings(environ={"AWS_TOKEN": TOKEN}, overrides=values)


@pytest.fixture
def source() -> FakeSource:
    fake = FakeSource()
    fake.add("app/db", '{"user":"u","password":"p"}')
    fake.add("other/key", "k")
    return fake


async def client_for(aiohttp_client: ClientFactory, source: FakeSource, cfg: Settings) -> TestClient[Any, Any]:
    metrics = Metrics()
    parts = build_components(cfg, source, metrics=metrics, audit=AuditLog(None, metrics=metrics))
    return await aiohttp_client(create_app(parts))


async def test_guard_order(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """X-Forwarded-For (400) before the token (403) before the method (405) before the path (404)."""
    client = await client_for(aiohttp_client, source, settings())
    forwarded = await client.get("/v1/app/db", headers={"X-Forwarded-For": "10.0.0.1"})
    assert forwarded.status == 400 and (await forwarded.json())["__type"] == "InvalidParameterException"
    missing = await client.post("/v1/app/db")
    assert missing.status == 403 and (await missing.json())["__type"] == "AccessDeniedException"
    wrong_method = await client.post("/v1/app/db", headers=HEADER)
    assert wrong_method.status == 405 and (await wrong_method.json())["__type"] == "MethodNotAllowedException"
    unknown = await client.get("/nowhere", headers=HEADER)
    assert unknown.status == 404 and (await unknown.json())["__type"] == "ResourceNotFoundException"
    assert source.calls["app/db"] == 0


async def test_read_then_cached(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """A miss reads upstream once and answers the GetSecretValue shape; the next read is a hit."""
    client = await client_for(aiohttp_client, source, settings())
    first = await client.get("/secretsmanager/get?secretId=app/db", headers=HEADER)
    second = await client.get("/v1/app/db", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (first.status, first.headers["X-Cache"], second.headers["X-Cache"]) == (200, "miss", "hit")
    body = await second.json()
    assert (body["Name"], body["SecretString"], body["VersionStages"]) == (
        "app/db",
        '{"user":"u","password":"p"}',
        ["AWSCURRENT"],
    )
    assert source.calls["app/db"] == 1
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


async def test_value_field_and_parameter_errors(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """?field= picks a key (FieldNotFoundException when absent); unknown, repeated or empty parameters are 400."""
    client = await client_for(aiohttp_client, source, settings())
    field = await client.get("/value/app/db?field=password", headers=HEADER)
    assert (field.status, await field.text()) == (200, "p")
    absent = await client.get("/value/app/db?field=nope", headers=HEADER)
    assert absent.status == 404 and (await absent.json())["__type"] == "FieldNotFoundException"
    for query, named in (
        ("?bogus=1", "bogus"),
        ("?versionId=a&versionId=b", "versionId"),
        ("?refreshNow=maybe", "refreshNow"),
    ):
        reply = await client.get(f"/v1/app/db{query}", headers=HEADER)
        assert reply.status == 400 and named in (await reply.json())["message"], query
    not_json = await client.get("/value/other/key?field=x", headers=HEADER)
    assert not_json.status == 400


async def test_policy_denies_before_any_upstream_call(
    aiohttp_client: ClientFactory, source: FakeSource, tmp_path: Any
) -> None:
    """A client outside its allow list gets the uniform 403 and the source is never called."""
    token_file = write_token(tmp_path / "web.token", "web-" + "e5" * 12)
    config = tmp_path / "agent.toml"
    config.write_text(f'[[clients]]\nname = "web"\ntoken = "file://{token_file}"\nallow = ["other/*"]\n')
    cfg = load_settings(str(config), environ={"AWS_TOKEN": TOKEN}, overrides={"aws.region": "us-east-1"})
    client = await client_for(aiohttp_client, source, cfg)
    web_header = {"X-Aws-Parameters-Secrets-Token": "web-" + "e5" * 12}
    denied = await client.get("/v1/app/db", headers=web_header)
    missing = await client.get("/v1/app/does-not-exist", headers=web_header)
    allowed = await client.get("/value/other/key", headers=web_header)
    assert denied.status == missing.status == 403
    assert await denied.read() == await missing.read()
    assert (allowed.status, await allowed.text()) == (200, "k")
    assert source.calls["app/db"] == 0 and source.calls["app/does-not-exist"] == 0


async def test_sdk_route_errors_in_aws_form(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """An unsigned SDK request is refused in the JSON-protocol form SDKs parse, and counted as an auth failure."""
    metrics = Metrics()
    parts = build_components(settings(), source, metrics=metrics, audit=AuditLog(None, metrics=metrics))
    client = await aiohttp_client(create_app(parts))
    reply = await client.post(
        "/",
        data=json.dumps({"SecretId": "app/db"}),
        headers={"X-Amz-Target": "secretsmanager.GetSecretValue", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert reply.status == 400
    assert reply.headers["x-amzn-ErrorType"] == "IncompleteSignatureException"
    assert json.loads(await reply.read())["__type"] == "IncompleteSignatureException"
    assert parts.metrics.auth_failures.labels("bad_signature")._value.get() == 1
    assert source.calls["app/db"] == 0


async def test_health_routes_and_metrics_token(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """/ping and /healthz answer without a token; /readyz is 503 until started; /metrics needs the token."""
    client = await client_for(aiohttp_client, source, settings())
    assert await (await client.get("/ping")).text() == "healthy"
    assert await (await client.get("/healthz")).text() == "ok"
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/metrics")).status == 403
    scraped = await client.get("/metrics", headers=HEADER)
    assert scraped.status == 200 and "secrets_agent_requests_total" in await scraped.text()


async def test_plain_post_to_root_is_not_an_sdk_call(aiohttp_client: ClientFactory, source: FakeSource) -> None:
    """POST / without X-Amz-Target gets the HTTP API's refusals (403, then 405), not the SDK's error form."""
    client = await client_for(aiohttp_client, source, settings())
    anonymous = await client.post("/")
    assert anonymous.status == 403 and anonymous.content_type == "application/json"
    with_token = await client.post("/", headers=HEADER)
    assert with_token.status == 405 and (await with_token.json())["__type"] == "MethodNotAllowedException"
    forwarded = await client.post(
        "/", headers={"X-Amz-Target": "secretsmanager.GetSecretValue", "X-Forwarded-For": "10.0.0.1"}
    )
    assert forwarded.status == 400 and forwarded.content_type == "application/json"
