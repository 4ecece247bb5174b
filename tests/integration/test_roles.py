"""roleArn reads (per-role credentials, caches and allow-lists) and cross-region ARN reads, against moto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3

from agent.dev.emulator import MotoServer
from tests.support.agent import REGION, AgentFactory
from tests.support.configs import write_token
from tests.support.faultproxy import Fault, FaultProxy

ROLE = "arn:aws:iam::123456789012:role/billing-reader"
OTHER_ROLE = "arn:aws:iam::123456789012:role/web-reader"
BILLING = "billing-" + "c3" * 12
WEB = "web-" + "d4" * 12
OTHER_REGION = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"


def roles_config(tmp_path: Path, *, audit: Path | None = None) -> str:
    """billing may name ROLE (by glob), web may name none; the shared token stays the default client."""
    text = f"""
[[clients]]
name = "billing"
token = "file://{write_token(tmp_path / "billing", BILLING)}"
allow = ["app/*"]
roles = ["arn:aws:iam::123456789012:role/billing-*"]

[[clients]]
name = "web"
token = "file://{write_token(tmp_path / "web", WEB)}"
allow = ["app/*"]
"""
    if audit is not None:
        text += f'\n[audit]\npath = "{audit}"\n'
    return text


def secret_reads_as(proxy: FaultProxy) -> set[str]:
    """The access key ids GetSecretValue calls were signed with."""
    return {key for operation, key in proxy.signers if operation == "GetSecretValue"}


async def test_default_client_reads_as_role_through_its_own_cache(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """roleArn reads assume the role once, sign with its credentials, and cache apart from the agent's own reads."""
    sm.create_secret(Name="app/db", SecretString="v1")
    async with run_agent(proxy.url) as agent:
        own = await agent.get("/secretsmanager/get?secretId=app/db")
        assert own.status == 200 and own.headers["X-Cache"] == "miss"
        assert secret_reads_as(proxy) == {"testing"}
        first = await agent.get(f"/secretsmanager/get?secretId=app/db&roleArn={ROLE}")
        assert first.status == 200, first.text
        assert first.json()["SecretString"] == "v1"
        assert first.headers["X-Cache"] == "miss"  # the role's cache is not the agent's
        again = await agent.get(f"/v1/app/db?roleArn={ROLE}")
        assert again.status == 200 and again.headers["X-Cache"] == "hit"
        assert (await agent.get(f"/value/app/db?roleArn={ROLE}")).text == "v1"
    assert proxy.calls["AssumeRole"] == 1
    assert proxy.calls["GetSecretValue"] == 2
    role_keys = secret_reads_as(proxy) - {"testing"}
    assert len(role_keys) == 1 and role_keys != {""}  # the role's read was signed with the assumed credentials


async def test_client_allow_list_for_roles(sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path) -> None:
    """A client reads as a role its roles list allows; another role, or no list at all, is 403 with no STS call."""
    sm.create_secret(Name="app/db", SecretString="v1")
    async with run_agent(proxy.url, config=roles_config(tmp_path), shared_token=False) as agent:
        refused = await agent.get(f"/v1/app/db?roleArn={ROLE}", token=WEB)
        assert refused.status == 403 and refused.json()["__type"] == "AccessDeniedException"
        other = await agent.get(f"/v1/app/db?roleArn={OTHER_ROLE}", token=BILLING)
        assert other.status == 403 and other.json()["__type"] == "AccessDeniedException"
        assert proxy.calls["AssumeRole"] == 0
        allowed = await agent.get(f"/v1/app/db?roleArn={ROLE}", token=BILLING)
        assert allowed.status == 200 and allowed.json()["SecretString"] == "v1"
        # The role is held now; web still may not borrow it (and the policy on the secret still applies).
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}", token=WEB)).status == 403
        sm.create_secret(Name="other/x", SecretString="x")
        assert (await agent.get(f"/v1/other/x?roleArn={ROLE}", token=BILLING)).status == 403
    assert proxy.calls["AssumeRole"] == 1
    assert proxy.calls["GetSecretValue"] == 1


async def test_malformed_role_arn_is_400(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A roleArn that is not an IAM role ARN, or an empty one, is 400 InvalidParameterException with no STS call."""
    sm.create_secret(Name="app/db", SecretString="v1")
    async with run_agent(proxy.url) as agent:
        for bad in ("billing-reader", "arn:aws:iam::123:role/x", "arn:aws:iam::123456789012:user/x", ""):
            reply = await agent.get(f"/v1/app/db?roleArn={bad}")
            assert reply.status == 400, (bad, reply.text)
            assert reply.json()["__type"] == "InvalidParameterException"
            assert "must be an IAM role ARN" in reply.json()["message"]
    assert proxy.calls["AssumeRole"] == 0


async def test_max_roles_refuses_a_new_role(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Past aws.max_roles distinct roles a new role is 400 (no eviction, no STS call); held roles still read."""
    sm.create_secret(Name="app/db", SecretString="v1")
    async with run_agent(proxy.url, aws__max_roles=1) as agent:
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}")).status == 200
        refused = await agent.get(f"/v1/app/db?roleArn={OTHER_ROLE}")
        assert refused.status == 400 and refused.json()["__type"] == "InvalidParameterException"
        assert "max_roles" in refused.json()["message"] or "at most 1" in refused.json()["message"]
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}&refreshNow=true")).status == 200
    assert proxy.calls["AssumeRole"] == 1


async def test_assume_role_refused_is_403_and_holds_no_slot(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """AssumeRole refused by STS answers 403 AccessDeniedException at once; the role takes no max_roles slot."""
    sm.create_secret(Name="app/db", SecretString="v1")
    proxy.add(Fault("AssumeRole", "error", status=403, code="AccessDenied", times=1))
    async with run_agent(proxy.url, aws__max_roles=1) as agent:
        refused = await agent.get(f"/secretsmanager/get?secretId=app/db&roleArn={OTHER_ROLE}")
        assert refused.status == 403 and refused.json()["__type"] == "AccessDeniedException"
        assert proxy.calls["GetSecretValue"] == 0
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}")).status == 200
    assert proxy.calls["AssumeRole"] == 2


async def test_role_is_audited_and_logged_without_credentials(
    sm: Any, moto: MotoServer, run_agent: AgentFactory, tmp_path: Path
) -> None:
    """A roleArn read's audit record names the role; no assumed credential appears in the audit file."""
    sm.create_secret(Name="app/db", SecretString="v1")
    audit = tmp_path / "audit.log"
    async with run_agent(moto.url, config=roles_config(tmp_path, audit=audit), shared_token=False) as agent:
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}", token=BILLING)).status == 200
        assert (await agent.get(f"/v1/app/db?roleArn={ROLE}", token=WEB)).status == 403
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    reads = [r for r in records if r.get("type") == "read"]
    assert [(r["client"], r["role_arn"], r["status"]) for r in reads] == [("billing", ROLE, 200), ("web", ROLE, 403)]
    assert "ASIA" not in audit.read_text() and "SessionToken" not in audit.read_text()


async def test_cross_region_arn_is_read_in_its_region(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A full ARN in another region is read from that region (moto keeps regions apart); a name stays at home."""
    elsewhere = boto3.client("secretsmanager", region_name=OTHER_REGION, endpoint_url=proxy.upstream)
    arn = elsewhere.create_secret(Name="app/remote", SecretString="far")["ARN"]
    assert f":{OTHER_REGION}:" in arn
    async with run_agent(proxy.url) as agent:
        reply = await agent.get(f"/secretsmanager/get?secretId={arn}")
        assert reply.status == 200, reply.text
        assert reply.json()["SecretString"] == "far" and reply.json()["ARN"] == arn
        assert (await agent.get("/v1/app/remote")).status == 404  # by name: the home region, which has none
        partial = arn[: -len("-AbCdEf")]
        assert (await agent.get(f"/value/{partial}?refreshNow=true")).text == "far"
        sm.create_secret(Name="app/home", SecretString="near")
        assert (await agent.get("/value/app/home")).text == "near"
