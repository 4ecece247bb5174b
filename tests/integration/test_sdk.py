"""Unchanged AWS SDK clients (boto3, the AWS CLI) reading through the agent's SigV4-verified endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.support.agent import AgentFactory, sdk_client
from tests.support.configs import write_token
from tests.support.faultproxy import FaultProxy
from tests.support.paths import JS_DIR

APP_TOKEN = "app-secret-" + "c3" * 12


async def test_boto3_reads_string_and_binary_by_name_arn_version_and_stage(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """GetSecretValue through the agent matches Secrets Manager's own answer; repeats are cache hits."""
    first = sm.create_secret(Name="sdk/db", SecretString='{"password":"p1"}')
    second = sm.put_secret_value(SecretId="sdk/db", SecretString='{"password":"p2"}')
    sm.create_secret(Name="sdk/bin", SecretBinary=b"\x00\xffbinary")
    async with run_agent(proxy.url) as agent:
        client = sdk_client(agent)
        by_name = await asyncio.to_thread(client.get_secret_value, SecretId="sdk/db")
        by_arn = await asyncio.to_thread(client.get_secret_value, SecretId=first["ARN"])
        by_version = await asyncio.to_thread(client.get_secret_value, SecretId="sdk/db", VersionId=first["VersionId"])
        by_stage = await asyncio.to_thread(client.get_secret_value, SecretId="sdk/db", VersionStage="AWSPREVIOUS")
        binary = await asyncio.to_thread(client.get_secret_value, SecretId="sdk/bin")
        upstream_before = proxy.calls["GetSecretValue"]
        again = await asyncio.to_thread(client.get_secret_value, SecretId="sdk/db")
        assert proxy.calls["GetSecretValue"] == upstream_before  # served from the cache
    assert by_name["SecretString"] == by_arn["SecretString"] == again["SecretString"] == '{"password":"p2"}'
    assert by_name["VersionId"] == second["VersionId"] and by_name["ARN"] == first["ARN"]
    assert isinstance(by_name["CreatedDate"], datetime)
    assert by_version["SecretString"] == by_stage["SecretString"] == '{"password":"p1"}'
    assert binary["SecretBinary"] == b"\x00\xffbinary" and "SecretString" not in binary


async def test_batch_and_describe(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """BatchGetSecretValue reports a missing id in Errors; DescribeSecret answers from cached metadata."""
    arn = sm.create_secret(Name="sdk/a", SecretString="a")["ARN"]
    sm.create_secret(Name="sdk/b", SecretString="b")
    async with run_agent(proxy.url) as agent:
        client = sdk_client(agent)
        batch = await asyncio.to_thread(client.batch_get_secret_value, SecretIdList=["sdk/a", "sdk/missing", "sdk/b"])
        described = await asyncio.to_thread(client.describe_secret, SecretId="sdk/a")
        calls = proxy.calls["DescribeSecret"]
        await asyncio.to_thread(client.describe_secret, SecretId=arn)
        assert proxy.calls["DescribeSecret"] == calls
    assert sorted(v["SecretString"] for v in batch["SecretValues"]) == ["a", "b"]
    assert batch["Errors"] == [
        {"SecretId": "sdk/missing", "ErrorCode": "ResourceNotFoundException", "Message": batch["Errors"][0]["Message"]}
    ]
    assert described["ARN"] == arn and described["Name"] == "sdk/a"
    assert list(described["VersionIdsToStages"].values()) == [["AWSCURRENT"]]


def app_config(tmp_path: Path) -> str:
    token = write_token(tmp_path / "app.token", APP_TOKEN)
    return f'[[clients]]\nname = "app"\ntoken = "file://{token}"\nallow = ["app/*"]\n'


async def test_sdk_errors_are_the_modeled_exceptions(
    sm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """Missing and denied secrets, writes, wrong keys and unknown key ids raise what an SDK raises against AWS."""
    sm.create_secret(Name="app/ok", SecretString="ok")
    sm.create_secret(Name="other/x", SecretString="x")
    async with run_agent(moto.url, config=app_config(tmp_path), metrics__public=True) as agent:
        client = sdk_client(agent, "app", APP_TOKEN)
        assert (await asyncio.to_thread(client.get_secret_value, SecretId="app/ok"))["SecretString"] == "ok"
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await asyncio.to_thread(client.get_secret_value, SecretId="app/none")
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            await asyncio.to_thread(client.get_secret_value, SecretId="other/x")
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
        with pytest.raises(botocore.exceptions.ClientError) as write:
            await asyncio.to_thread(client.put_secret_value, SecretId="app/ok", SecretString="new")
        assert write.value.response["Error"]["Code"] == "AccessDeniedException"
        assert sm.get_secret_value(SecretId="app/ok")["SecretString"] == "ok"  # nothing was forwarded
        with pytest.raises(botocore.exceptions.ClientError) as unknown_op:
            await asyncio.to_thread(client.list_secrets)
        assert unknown_op.value.response["Error"]["Code"] == "UnknownOperationException"
        with pytest.raises(botocore.exceptions.ClientError) as wrong_secret:
            await asyncio.to_thread(sdk_client(agent, "app", "not-the-token").get_secret_value, SecretId="app/ok")
        assert wrong_secret.value.response["Error"]["Code"] == "InvalidSignatureException"
        with pytest.raises(botocore.exceptions.ClientError) as unknown_key:
            await asyncio.to_thread(sdk_client(agent, "nobody", APP_TOKEN).get_secret_value, SecretId="app/ok")
        assert unknown_key.value.response["Error"]["Code"] == "UnrecognizedClientException"
        for error in (denied, write, unknown_op, wrong_secret, unknown_key):
            assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert error.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"]
        assert await agent.metric("secrets_agent_reads_total", client="app", decision="allow") == 1
        assert await agent.metric("secrets_agent_reads_total", client="app", decision="deny") == 1


async def test_sdk_reads_are_audited_and_guarded(sm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path) -> None:
    """SDK reads land in the audit trail like HTTP reads; X-Forwarded-For is refused before SigV4."""
    sm.create_secret(Name="app/ok", SecretString="audited-sdk-value")
    audit = tmp_path / "audit.log"
    config = app_config(tmp_path) + f'[audit]\npath = "{audit}"\n'
    async with run_agent(moto.url, config=config) as agent:
        client = sdk_client(agent, "app", APP_TOKEN)
        await asyncio.to_thread(client.get_secret_value, SecretId="app/ok")
        await asyncio.to_thread(client.batch_get_secret_value, SecretIdList=["app/ok", "app/none"])
        forwarded = await agent.get(
            "/", method="POST", token=None, headers={"X-Amz-Target": "secretsmanager.GetSecretValue",
                                                      "X-Forwarded-For": "10.1.1.1"}
        )  # fmt: skip
        assert forwarded.status == 400
    text = audit.read_text()
    assert "audited-sdk-value" not in text and APP_TOKEN not in text
    reads = [json.loads(line) for line in text.splitlines()]
    assert [(r["client"], r["secret_id"], r["status"]) for r in reads] == [
        ("app", "app/ok", 200),
        ("app", "app/ok", 200),
        ("app", "app/none", 404),
        (None, None, 400),  # the forwarded attempt, refused before anyone was identified
    ]


async def test_aws_cli_through_the_agent(sm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path) -> None:
    """The AWS CLI, configured only by environment variables, reads string and binary secrets through the agent."""
    sm.create_secret(Name="app/cli", SecretString="from-the-cli")
    sm.create_secret(Name="app/blob", SecretBinary=b"\x01\x02\x03")
    aws = str(Path(sys.executable).parent / "aws")
    async with run_agent(moto.url, config=app_config(tmp_path)) as agent:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": agent.base,
            "AWS_ACCESS_KEY_ID": "app",
            "AWS_SECRET_ACCESS_KEY": APP_TOKEN,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env.pop("AWS_ENDPOINT_URL", None)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([aws, "secretsmanager", *args], env=env, capture_output=True, text=True, timeout=60)

        text = await asyncio.to_thread(cli, "get-secret-value", "--secret-id", "app/cli", "--query", "SecretString",
                                       "--output", "text")  # fmt: skip
        blob = await asyncio.to_thread(cli, "get-secret-value", "--secret-id", "app/blob")
        missing = await asyncio.to_thread(cli, "get-secret-value", "--secret-id", "app/none")
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == "from-the-cli"
    assert base64.b64decode(json.loads(blob.stdout)["SecretBinary"]) == b"\x01\x02\x03"
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


@pytest.mark.skipif(
    not (JS_DIR / "node_modules" / "@aws-sdk" / "client-secrets-manager").is_dir(),
    reason="Node.js or the AWS SDK for JavaScript is not installed (make test installs it when npm exists)",
)
async def test_javascript_sdk_through_the_agent(sm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path) -> None:
    """The AWS SDK for JavaScript v3 reads through the agent and maps a missing secret to its exception."""
    sm.create_secret(Name="app/js", SecretString="from-javascript")
    async with run_agent(moto.url, config=app_config(tmp_path)) as agent:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": agent.base,
            "AWS_ACCESS_KEY_ID": "app",
            "AWS_SECRET_ACCESS_KEY": APP_TOKEN,
            "AWS_REGION": "us-east-1",
        }
        env.pop("AWS_ENDPOINT_URL", None)

        def node(secret_id: str) -> dict[str, Any]:
            result = subprocess.run(
                ["node", str(JS_DIR / "read_secret.mjs"), secret_id],
                env=env, capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            return dict(json.loads(result.stdout))

        found = await asyncio.to_thread(node, "app/js")
        missing = await asyncio.to_thread(node, "app/none")
    assert found["SecretString"] == "from-javascript"
    assert missing == {"error": "ResourceNotFoundException"}
