"""Parameter Store reads on /systemsmanager/parameters/get against moto: shape, selectors, decryption, failures."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from tests.support.agent import TOKEN, AgentFactory, AgentHandle, run_cli
from tests.support.configs import write_token
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually

GET = "/systemsmanager/parameters/get"
OTHER = "other-" + "c3" * 12


async def test_string_parameter_has_getparameter_shape(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """A String parameter answers GetParameter's JSON ({"Parameter": ..., "ResultMetadata": {}}); then hits."""
    ssm.put_parameter(Name="/app/db/host", Value="db.internal", Type="String")
    async with run_agent(moto.url) as agent:
        reply = await agent.get(f"{GET}?name=/app/db/host")
        assert reply.status == 200, reply.text
        body = reply.json()
        assert body["ResultMetadata"] == {}
        param = body["Parameter"]
        assert (param["Name"], param["Type"], param["Value"], param["Version"]) == (
            "/app/db/host",
            "String",
            "db.internal",
            1,
        )
        assert param["ARN"].endswith(":parameter/app/db/host")
        assert param["LastModifiedDate"].endswith("Z")
        assert reply.headers["X-Cache"] == "miss"
        again = await agent.get(f"{GET}?name=/app/db/host&withDecryption=true")
        assert (again.status, again.headers["X-Cache"]) == (200, "hit")
        assert again.json()["Parameter"]["Value"] == "db.internal"


async def test_string_list_parameter(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """A StringList parameter keeps its type and comma-separated value."""
    ssm.put_parameter(Name="/app/hosts", Value="a,b,c", Type="StringList")
    async with run_agent(moto.url) as agent:
        param = (await agent.get(f"{GET}?name=/app/hosts")).json()["Parameter"]
        assert (param["Type"], param["Value"]) == ("StringList", "a,b,c")


async def test_secure_string_decrypted_only_when_asked(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """A SecureString is plaintext with withDecryption=true, else what GetParameter returns without decryption."""
    ssm.put_parameter(Name="/app/db/password", Value="hunter2", Type="SecureString")
    encrypted = ssm.get_parameter(Name="/app/db/password", WithDecryption=False)["Parameter"]["Value"]
    assert encrypted != "hunter2"
    async with run_agent(moto.url) as agent:
        plain = await agent.get(f"{GET}?name=/app/db/password&withDecryption=true")
        assert plain.status == 200, plain.text
        assert plain.json()["Parameter"]["Value"] == "hunter2"
        for query in ("", "&withDecryption=false", "&withDecryption=FALSE"):
            reply = await agent.get(f"{GET}?name=/app/db/password{query}")
            assert reply.status == 200, reply.text
            assert reply.json()["Parameter"]["Value"] == encrypted
            assert reply.json()["Parameter"]["Type"] == "SecureString"
        bad = await agent.get(f"{GET}?name=/app/db/password&withDecryption=yes")
        assert (bad.status, bad.json()["__type"]) == (400, "InvalidParameterException")


async def test_version_and_label_selectors(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """name:version, name:label, version= and label= pick that version; both at once is a 400."""
    ssm.put_parameter(Name="/app/flag", Value="v1", Type="String")
    ssm.put_parameter(Name="/app/flag", Value="v2", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name="/app/flag", ParameterVersion=1, Labels=["blue"])
    async with run_agent(moto.url) as agent:
        for query, value in (
            ("name=/app/flag", "v2"),
            ("name=/app/flag:1", "v1"),
            ("name=/app/flag&version=1", "v1"),
            ("name=/app/flag:blue", "v1"),
            ("name=/app/flag&label=blue", "v1"),
            ("name=/app/flag&version=2", "v2"),
        ):
            reply = await agent.get(f"{GET}?{query}")
            assert reply.status == 200, (query, reply.text)
            assert reply.json()["Parameter"]["Value"] == value, query
        for query in ("name=/app/flag&version=1&label=blue", "name=/app/flag:1&version=1", "name=/app/flag&version=x"):
            reply = await agent.get(f"{GET}?{query}")
            assert (reply.status, reply.json()["__type"]) == (400, "InvalidParameterException"), query
        missing_name = await agent.get(f"{GET}?version=1")
        assert missing_name.status == 400 and "name" in missing_name.json()["message"]


async def test_missing_parameter_is_404_and_remembered(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A missing parameter (or version) is 404 with AWS's code; repeated reads within the negative TTL make no call."""
    ssm.put_parameter(Name="/app/only-v1", Value="x", Type="String")
    async with run_agent(proxy.url, cache__negative_ttl_seconds=60) as agent:
        for _ in range(3):
            reply = await agent.get(f"{GET}?name=/app/nope")
            assert (reply.status, reply.json()["__type"]) == (404, "ParameterNotFound")
        assert proxy.calls["GetParameter"] == 1
        version = await agent.get(f"{GET}?name=/app/only-v1:7")
        assert version.status == 404
        assert version.json()["__type"] in ("ParameterVersionNotFound", "ParameterNotFound")


async def test_policy_by_name_and_arn(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path) -> None:
    """Client allow patterns match parameter names and ARNs; a denied read makes no upstream call."""
    ssm.put_parameter(Name="/public/motd", Value="hello", Type="String")
    ssm.put_parameter(Name="/private/key", Value="k", Type="String")
    arn = ssm.get_parameter(Name="/private/key")["Parameter"]["ARN"]
    config = f"""
[[clients]]
name = "other"
token = "file://{write_token(tmp_path / "other", OTHER)}"
allow = ["/public/*"]

[[secret_policies]]
secret = "arn:aws:ssm:*:parameter/public/motd"
deny = ["default"]
"""
    async with run_agent(proxy.url, config=config) as agent:
        ok = await agent.get(f"{GET}?name=/public/motd", token=OTHER)
        assert ok.status == 200, ok.text
        for name in ("/private/key", arn):
            denied = await agent.get(f"{GET}?name={name}", token=OTHER)
            assert (denied.status, denied.json()["__type"]) == (403, "AccessDeniedException"), name
        assert proxy.calls["GetParameter"] == 1
        # A resource policy on the ARN refuses the shared token's client too.
        refused = await agent.get(f"{GET}?name=/public/motd")
        assert refused.status == 403
        assert await agent.metric("secrets_agent_reads_total", client="other", decision="deny") == 2


async def test_stale_if_error(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """While Parameter Store fails transiently, the last good value is served, marked stale."""
    ssm.put_parameter(Name="/app/stale", Value="last-good", Type="String")
    async with run_agent(
        proxy.url, cache__ttl_seconds=1, refresh__mode="ttl", prefetch__parameters=["/app/stale"]
    ) as agent:
        await agent.wait_ready()
        assert (await agent.get(f"{GET}?name=/app/stale")).headers["X-Cache"] == "hit"
        await asyncio.sleep(1.2)  # deliberate: let the 1 s TTL lapse, so the read must go upstream
        proxy.add(Fault("GetParameter", "error", status=500, code="InternalServerError"))
        reply = await agent.get(f"{GET}?name=/app/stale")
        assert reply.status == 200, reply.text
        assert (reply.headers["X-Cache"], reply.headers["X-Cache-Stale"]) == ("stale", "true")
        assert reply.json()["Parameter"]["Value"] == "last-good"
        # Backing off: reads within the window are stale without a call. The window has full jitter, so it may
        # end before the next read (sooner still on a loaded machine); counted over 20 reads, backoff windows
        # of up to 1, 2, 4, ... s allow a few calls at most, where reads without backoff would call 20 times.
        calls = proxy.calls["GetParameter"]
        for _ in range(20):
            assert (await agent.get(f"{GET}?name=/app/stale")).headers["X-Cache"] == "stale"
        assert proxy.calls["GetParameter"] - calls < 10
        never_cached = await agent.get(f"{GET}?name=/app/other")
        assert never_cached.status == 502
        proxy.clear()


async def test_prefetch_by_path(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """prefetch.parameter_paths loads every parameter under a path before readiness; reads are then hits."""
    ssm.put_parameter(Name="/svc/a", Value="1", Type="String")
    ssm.put_parameter(Name="/svc/deep/b", Value="2", Type="String")
    ssm.put_parameter(Name="/svc/secret", Value="s3cr3t", Type="SecureString")
    ssm.put_parameter(Name="/elsewhere", Value="3", Type="String")
    async with run_agent(proxy.url, prefetch__parameter_paths=["/svc"]) as agent:
        await agent.wait_ready()
        for name, value in (("/svc/a", "1"), ("/svc/deep/b", "2")):
            reply = await agent.get(f"{GET}?name={name}")
            assert (reply.headers["X-Cache"], reply.json()["Parameter"]["Value"]) == ("hit", value)
        secret = await agent.get(f"{GET}?name=/svc/secret&withDecryption=true")
        assert (secret.headers["X-Cache"], secret.json()["Parameter"]["Value"]) == ("hit", "s3cr3t")
        assert proxy.calls["GetParameter"] == 0
        assert (await agent.get(f"{GET}?name=/elsewhere")).headers["X-Cache"] == "miss"


async def test_version_change_picked_up_by_refresher(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A new parameter version is found by DescribeParameters polling and served from cache, no read waiting."""
    ssm.put_parameter(Name="/app/mode", Value="old", Type="String")
    async with run_agent(proxy.url, refresh__parameter_interval_seconds=1, prefetch__parameters=["/app/mode"]) as agent:
        await agent.wait_ready()
        assert (await agent.get(f"{GET}?name=/app/mode")).json()["Parameter"]["Value"] == "old"
        ssm.put_parameter(Name="/app/mode", Value="new", Type="String", Overwrite=True)

        async def updated() -> bool:
            reply = await agent.get(f"{GET}?name=/app/mode")
            assert reply.headers["X-Cache"] == "hit"
            return bool(reply.json()["Parameter"]["Value"] == "new")

        await eventually(updated, timeout=30, message="the new version to be served")
        assert proxy.calls["DescribeParameters"] >= 1
        # Unchanged passes read no value: only the changed version was re-read.
        assert proxy.calls["GetParameter"] == 1


async def test_parameter_reads_are_audited(ssm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path) -> None:
    """A parameter read writes an audit record naming the parameter, its version and the decryption flag."""
    ssm.put_parameter(Name="/app/audited", Value="x", Type="String")
    audit = tmp_path / "audit.log"
    async with run_agent(moto.url, audit__path=str(audit)) as agent:
        assert (await agent.get(f"{GET}?name=/app/audited&withDecryption=true")).status == 200
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    reads = [r for r in records if r.get("type") == "read"]
    assert reads and reads[-1]["name"] == "/app/audited"
    assert (reads[-1]["kind"], reads[-1]["version_id"], reads[-1]["decrypted"]) == ("parameter", "1", True)


def cli_env(agent: AgentHandle) -> dict[str, str]:
    """Point CLI commands at an in-process agent's TCP port."""
    return {"SECRETS_AGENT_SERVER_HTTP_PORT": str(agent.started.tcp[1])}


async def test_get_reads_ssm_names(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """`get ssm:NAME` prints the (decrypted) parameter value; --field, --stage as a label, missing is exit 10."""
    ssm.put_parameter(Name="/cli/db", Value='{"user":"u","password":"pw"}', Type="SecureString")
    ssm.put_parameter(Name="/cli/db", Value='{"user":"u","password":"pw2"}', Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name="/cli/db", ParameterVersion=1, Labels=["old"])
    async with run_agent(moto.url) as agent:
        env = cli_env(agent)
        whole = await asyncio.to_thread(run_cli, ["get", "ssm:/cli/db"], env)
        assert (whole.returncode, whole.stdout) == (0, '{"user":"u","password":"pw2"}'), whole.stderr
        field = await asyncio.to_thread(run_cli, ["get", "ssm:/cli/db", "--field", "password"], env)
        assert (field.returncode, field.stdout) == (0, "pw2")
        old = ["get", "ssm:/cli/db", "--field", "password", "--stage", "old"]
        labelled = await asyncio.to_thread(run_cli, old, env)
        assert (labelled.returncode, labelled.stdout) == (0, "pw")
        missing = await asyncio.to_thread(run_cli, ["get", "ssm:/cli/nope"], env)
        assert (missing.returncode, missing.stdout) == (10, "")


async def test_exec_env_from_ssm_names(ssm: Any, moto: Any, run_agent: AgentFactory) -> None:
    """exec fills variables from ssm: references, fields included."""
    ssm.put_parameter(Name="/exec/host", Value="db.internal", Type="String")
    ssm.put_parameter(Name="/exec/creds", Value='{"password":"ssm-canary-pw"}', Type="SecureString")
    child = "import os; print(os.environ['DB_HOST'], os.environ['DB_PASSWORD'])"
    async with run_agent(moto.url) as agent:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
        env.update({"AWS_TOKEN": TOKEN, **cli_env(agent)})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "exec",
            "--env", "DB_HOST=ssm:/exec/host", "--env", "DB_PASSWORD=ssm:/exec/creds#password",
            "--", sys.executable, "-c", child,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["db.internal", "ssm-canary-pw"]


async def test_template_renders_ssm_names_and_follows_new_versions(
    ssm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """secret('ssm:NAME') renders a parameter; a new version found by the refresher re-renders the file."""
    ssm.put_parameter(Name="/tpl/host", Value="h1", Type="String")
    destination = tmp_path / "app.conf"
    config = f"""
[[templates]]
destination = "{destination}"
contents = "host={{{{ secret('ssm:/tpl/host') }}}}\\n"
"""
    async with run_agent(
        moto.url, config=config, refresh__parameter_interval_seconds=1, prefetch__parameters=["/tpl/host"]
    ) as agent:
        await agent.wait_ready()
        assert destination.read_text() == "host=h1\n"
        ssm.put_parameter(Name="/tpl/host", Value="h2", Type="String", Overwrite=True)
        await eventually(
            lambda: destination.read_text() == "host=h2\n", timeout=30, interval=0.1, message="the re-rendered file"
        )


def ssm_sdk(agent: AgentHandle, key_id: str = "default", secret: str = TOKEN) -> Any:
    """boto3's ssm client pointed at the agent, as an app would configure it."""
    return boto3.client(
        "ssm", region_name="eu-west-1", endpoint_url=agent.base, aws_access_key_id=key_id, aws_secret_access_key=secret
    )


async def test_sdk_get_parameter_and_get_parameters(ssm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """boto3 GetParameter/GetParameters through the agent match Parameter Store's answers; repeats are cache hits."""
    ssm.put_parameter(Name="/sdk/host", Value="h", Type="String")
    ssm.put_parameter(Name="/sdk/pw", Value="p1", Type="SecureString")
    ssm.put_parameter(Name="/sdk/pw", Value="p2", Type="SecureString", Overwrite=True)
    direct = ssm.get_parameter(Name="/sdk/pw", WithDecryption=False)["Parameter"]
    async with run_agent(proxy.url) as agent:
        client = ssm_sdk(agent)
        plain = await asyncio.to_thread(client.get_parameter, Name="/sdk/pw", WithDecryption=True)
        encrypted = await asyncio.to_thread(client.get_parameter, Name="/sdk/pw")
        old = await asyncio.to_thread(client.get_parameter, Name="/sdk/pw:1", WithDecryption=True)
        many = await asyncio.to_thread(
            client.get_parameters, Names=["/sdk/host", "/sdk/pw", "/sdk/missing"], WithDecryption=True
        )
        calls = proxy.calls["GetParameter"]
        again = await asyncio.to_thread(client.get_parameter, Name="/sdk/host")
        assert proxy.calls["GetParameter"] == calls  # served from the cache
        with pytest.raises(botocore.exceptions.ClientError) as missing:
            await asyncio.to_thread(client.get_parameter, Name="/sdk/missing")
        with pytest.raises(botocore.exceptions.ClientError) as write:
            await asyncio.to_thread(client.put_parameter, Name="/sdk/x", Value="x", Type="String")
    assert (plain["Parameter"]["Value"], plain["Parameter"]["Version"]) == ("p2", 2)
    assert encrypted["Parameter"]["Value"] == direct["Value"]
    assert old["Parameter"]["Value"] == "p1"
    assert isinstance(plain["Parameter"]["LastModifiedDate"], datetime)
    assert sorted(p["Value"] for p in many["Parameters"]) == ["h", "p2"]
    assert many["InvalidParameters"] == ["/sdk/missing"]
    assert again["Parameter"]["Value"] == "h"
    assert missing.value.response["Error"]["Code"] == "ParameterNotFound"
    assert write.value.response["Error"]["Code"] == "UnknownOperationException"


async def test_sdk_signature_and_policy(ssm: Any, moto: Any, run_agent: AgentFactory, tmp_path: Path) -> None:
    """A wrong token or a Secrets Manager scope is refused; a client's policy applies to GetParameter(s)."""
    ssm.put_parameter(Name="/public/a", Value="a", Type="String")
    ssm.put_parameter(Name="/private/b", Value="b", Type="String")
    config = f"""
[[clients]]
name = "other"
token = "file://{write_token(tmp_path / "other", OTHER)}"
allow = ["/public/*"]
"""
    async with run_agent(moto.url, config=config) as agent:
        with pytest.raises(botocore.exceptions.ClientError) as bad:
            await asyncio.to_thread(ssm_sdk(agent, secret="wrong").get_parameter, Name="/public/a")
        client = ssm_sdk(agent, "other", OTHER)
        ok = await asyncio.to_thread(client.get_parameter, Name="/public/a")
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            await asyncio.to_thread(client.get_parameter, Name="/private/b")
        with pytest.raises(botocore.exceptions.ClientError) as denied_many:
            await asyncio.to_thread(client.get_parameters, Names=["/public/a", "/private/b"])
        # A Secrets Manager signature cannot be replayed as a Parameter Store call (scope bound to the target).
        sm_signed = await agent.get(
            "/",
            method="POST",
            token=None,
            headers={
                "X-Amz-Target": "AmazonSSM.GetParameter",
                "Authorization": "AWS4-HMAC-SHA256 Credential=default/20260101/eu-west-1/secretsmanager/aws4_request, "
                "SignedHeaders=host;x-amz-date;x-amz-target, Signature=" + "0" * 64,
                "X-Amz-Date": "20260101T000000Z",
            },
        )
    assert bad.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert ok["Parameter"]["Value"] == "a"
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied_many.value.response["Error"]["Code"] == "AccessDeniedException"
    assert sm_signed.status == 400 and "not ssm" in sm_signed.text


async def test_reference_names_cannot_reach_secrets_past_their_policies(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """/aws/reference/secretsmanager/... is refused (400, no upstream call): secrets are read on their own routes."""
    sm.create_secret(Name="ref/db", SecretString="behind-a-secret-policy")
    async with run_agent(proxy.url) as agent:
        for name in ("/aws/reference/secretsmanager/ref/db", "/AWS/Reference/secretsmanager/ref/db"):
            reply = await agent.get(f"{GET}?name={name}&withDecryption=true")
            assert reply.status == 400, reply.text
            assert "behind-a-secret-policy" not in reply.text
    assert proxy.calls["GetParameter"] == 0 and proxy.calls["GetSecretValue"] == 0
