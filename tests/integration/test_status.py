"""``GET /status``: rotation history, rotation health and readers, against moto through the fault proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3

from agent.dev.emulator import MotoServer
from tests.support.agent import REGION, TOKEN, AgentFactory, AgentHandle
from tests.support.events import service_event
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.waiting import eventually

FAST = {
    "refresh__interval_seconds": 1,
    "status__health_interval_seconds": 0.2,
}
DAY = 86_400


async def status(agent: AgentHandle, token: str | None = TOKEN, **kwargs: Any) -> dict[str, Any]:
    reply = await agent.get("/status", token=token, **kwargs)
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    document: dict[str, Any] = reply.json()
    return document


async def secret_entry(agent: AgentHandle, name: str) -> dict[str, Any]:
    found = [entry for entry in (await status(agent))["secrets"] if entry["name"] == name]
    assert len(found) == 1, found
    return found[0]


async def wait_health(agent: AgentHandle, name: str, health: str, timeout: float = 30) -> dict[str, Any]:
    last: list[Any] = []

    async def reached() -> dict[str, Any] | None:
        entry = await secret_entry(agent, name)
        last[:] = [entry["health"], entry["health_reason"]]
        return entry if entry["health"] == health else None

    return await eventually(reached, timeout=timeout, interval=0.1, message=lambda: f"{name} to be {health} ({last})")


async def test_status_shape_and_rotation_history(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """/status lists each prefetched secret; a PutSecretValue found by polling appears in its history (poll, delay)."""
    first = sm.create_secret(Name="st/db", SecretString="one")["VersionId"]
    sm.create_secret(Name="st/api", SecretString="key")
    async with run_agent(proxy.url, prefetch__secrets=["st/db", "st/api"], **FAST) as agent:
        await agent.wait_ready()
        assert (await agent.get("/value/st/db")).text == "one"
        document = await status(agent)
        assert set(document) == {"agent", "upstream", "cache", "secrets"}
        assert document["agent"]["ready"] is True and document["agent"]["now"].endswith("Z")
        assert document["upstream"]["healthy"] is True and document["upstream"]["last_success"].endswith("Z")
        assert document["cache"]["secrets"] == 2 and document["cache"]["hits"] >= 1
        entry = await secret_entry(agent, "st/db")
        assert entry["version_id"] == first and entry["health"] == "ok"
        assert entry["rotation"] == {"enabled": None, "schedule": None, "last": None, "next": None}
        assert entry["reads"][0]["client"] == "default" and entry["reads"][0]["last_hour"] == 1
        assert entry["last_checked"].endswith("Z") and entry["staleness_seconds"] >= 0

        async def seeded() -> bool:  # ListSecretVersionIds, after prefetch
            history = (await secret_entry(agent, "st/db"))["history"]
            return [(h["version_id"], h["how"]) for h in history] == [(first, "history")]

        await eventually(seeded, timeout=30, interval=0.1, message="history seeded from ListSecretVersionIds")
        assert proxy.calls["ListSecretVersionIds"] == 2  # one per prefetched secret, no more

        second = sm.put_secret_value(SecretId="st/db", SecretString="two")["VersionId"]

        async def rotated() -> dict[str, Any] | None:
            history = (await secret_entry(agent, "st/db"))["history"]
            return history[0] if history and history[0]["version_id"] == second else None

        change = await eventually(rotated, timeout=30, interval=0.1, message="the rotation in the history")
        assert change["previous_version_id"] == first and change["how"] == "poll"
        assert change["seen_at"].endswith("Z") and 0 <= change["delay_seconds"] < 60
        entry = await secret_entry(agent, "st/db")
        assert entry["version_id"] == second and entry["last_changed"] == change["seen_at"]


async def test_old_version_readers(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A client reading the replaced version (by id) after the rotation was seen is listed; current reads are not."""
    first = sm.create_secret(Name="st/old", SecretString="one")["VersionId"]
    async with run_agent(proxy.url, prefetch__secrets=["st/old"], **FAST) as agent:
        await agent.wait_ready()
        second = sm.put_secret_value(SecretId="st/old", SecretString="two")["VersionId"]

        async def rotated() -> bool:
            return (await secret_entry(agent, "st/old"))["version_id"] == second

        await eventually(rotated, timeout=30, interval=0.1, message="the rotation")
        assert (await agent.get("/v1/st/old")).status == 200
        assert (await agent.get(f"/v1/st/old?versionId={first}")).status == 200
        assert (await agent.get("/v1/st/old?versionStage=AWSPREVIOUS")).status == 200
        readers = (await secret_entry(agent, "st/old"))["old_version_readers"]
        assert [(r["client"], r["version_id"], r["reads"]) for r in readers] == [("default", first, 2)]


async def test_status_shows_only_readable_secrets_and_counts_denials(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """A client sees only secrets its policies allow; its refused reads are counted on the secret they targeted."""
    sm.create_secret(Name="st/mine", SecretString="m")
    sm.create_secret(Name="st/theirs", SecretString="t")
    config = '[[clients]]\nname = "app"\ntoken = "env:APP_TOKEN"\nallow = ["st/mine"]\n'
    async with run_agent(
        proxy.url,
        config=config,
        environ={"APP_TOKEN": "app-token-123456"},
        prefetch__secrets=["st/mine", "st/theirs"],
        **FAST,
    ) as agent:
        await agent.wait_ready()
        assert (await agent.get("/v1/st/theirs", token="app-token-123456")).status == 403
        mine = await status(agent, token="app-token-123456")
        assert [entry["name"] for entry in mine["secrets"]] == ["st/mine"]
        everything = await status(agent)  # the shared token is unrestricted
        assert sorted(entry["name"] for entry in everything["secrets"]) == ["st/mine", "st/theirs"]
        theirs = next(entry for entry in everything["secrets"] if entry["name"] == "st/theirs")
        assert [(r["client"], r["denied"]) for r in theirs["reads"]] == [("app", 1)]


async def test_status_guard_order(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """/status follows every route's guard order: X-Forwarded-For 400, token 403, method 405; and the Unix socket."""
    sm.create_secret(Name="st/guard", SecretString="g")
    async with run_agent(proxy.url, prefetch__secrets=["st/guard"], **FAST) as agent:
        await agent.wait_ready()
        xff = await agent.get("/status", token=None, headers={"X-Forwarded-For": "1.2.3.4"})
        assert xff.status == 400
        assert (await agent.get("/status", token=None)).status == 403
        assert (await agent.get("/status", token="wrong-token")).status == 403
        assert (await agent.get("/status", method="POST")).status == 405
        assert (await agent.get("/status", unix=True)).status == 200


async def test_status_never_holds_a_value_or_token(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Canary: after reads, a rotation and denials, /status holds no secret value and no token."""
    canary, rotated = "status-canary-7f3a9c", "status-canary-rotated-51be"
    sm.create_secret(Name="st/canary", SecretString=json.dumps({"password": canary}))
    async with run_agent(proxy.url, prefetch__secrets=["st/canary"], log__level="debug", **FAST) as agent:
        await agent.wait_ready()
        await agent.get("/v1/st/canary")
        await agent.get("/v1/st/canary", token="wrong-" + TOKEN)
        sm.put_secret_value(SecretId="st/canary", SecretString=json.dumps({"password": rotated}))

        async def seen() -> bool:
            return len((await secret_entry(agent, "st/canary"))["history"]) >= 2

        await eventually(seen, timeout=30, interval=0.1, message="the rotation")
        await agent.get("/value/st/canary")
        body = (await agent.get("/status")).text
        for needle in (canary, rotated, TOKEN):
            assert needle not in body


async def test_overdue_when_next_rotation_passed(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Rotation enabled and NextRotationDate a day past (upstream's dates shifted two days back): overdue."""
    sm.create_secret(Name="st/late", SecretString="v")
    sm.rotate_secret(SecretId="st/late", RotationRules={"AutomaticallyAfterDays": 1})  # moto: next = now + 1 day
    sm.put_secret_value(SecretId="st/late", SecretString="v")  # moto's lambda-less rotation leaves no value
    proxy.shift_dates(-2 * DAY)  # as if the last rotation was two days ago: next was due a day ago
    async with run_agent(proxy.url, prefetch__secrets=["st/late"], status__rotation_grace_seconds=60, **FAST) as agent:
        await agent.wait_ready()
        entry = await wait_health(agent, "st/late", "overdue")
        assert entry["rotation"]["enabled"] is True and entry["rotation"]["schedule"] == "every 1 days"
        assert entry["rotation"]["next"] < entry["last_checked"]
        assert await agent.metric("secrets_agent_secrets", health="overdue") == 1
        assert await agent.metric("secrets_agent_secrets", health="ok") == 0


async def test_failed_when_pending_lingers_then_ok(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """An AWSPENDING version older than the grace is failed; the stage move to AWSCURRENT makes it ok again."""
    old = sm.create_secret(Name="st/pending", SecretString="old")["VersionId"]
    async with run_agent(
        proxy.url, prefetch__secrets=["st/pending"], status__rotation_grace_seconds=1, **FAST
    ) as agent:
        await agent.wait_ready()
        pending = sm.put_secret_value(SecretId="st/pending", SecretString="new", VersionStages=["AWSPENDING"])
        entry = await wait_health(agent, "st/pending", "failed")
        assert "AWSPENDING" in entry["health_reason"]
        assert entry["spans"][0]["health"] == "failed" and entry["spans"][0]["end"] is None
        sm.update_secret_version_stage(
            SecretId="st/pending",
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending["VersionId"],
            RemoveFromVersionId=old,
        )
        entry = await wait_health(agent, "st/pending", "ok")
        assert entry["spans"][0]["end"] is not None  # the failed span closed


async def test_failed_by_rotation_failed_event(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A RotationFailed event on SQS marks the secret failed until a new AWSCURRENT is seen."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto.url)
    queue = sqs.create_queue(QueueName="status-events")["QueueUrl"]
    arn = sm.create_secret(Name="st/event", SecretString="v1")["ARN"]
    async with run_agent(
        moto.url,
        events__sqs_queue_url=queue,
        events__wait_time_seconds=1,
        prefetch__secrets=["st/event"],
        **FAST,
    ) as agent:
        await agent.wait_ready()
        sqs.send_message(QueueUrl=queue, MessageBody=service_event("RotationFailed", arn))
        entry = await wait_health(agent, "st/event", "failed")
        assert "failed" in entry["health_reason"]
        assert await agent.metric("secrets_agent_secrets", health="failed") == 1
        sm.put_secret_value(SecretId="st/event", SecretString="v2")
        await wait_health(agent, "st/event", "ok")


async def test_stale_while_upstream_fails(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """Upstream failing for two poll intervals: the secret is stale (still served); healthy again after."""
    sm.create_secret(Name="st/stale", SecretString="v")
    async with run_agent(proxy.url, prefetch__secrets=["st/stale"], **FAST) as agent:
        await agent.wait_ready()
        proxy.add(Fault("*", "error", status=503, code="ServiceUnavailable"))
        await wait_health(agent, "st/stale", "stale")
        assert (await agent.get("/value/st/stale")).text == "v"
        upstream = (await status(agent))["upstream"]
        assert upstream["healthy"] is False and upstream["failure_burst"] >= 1
        assert upstream["last_error"] == "ServiceUnavailable"
        proxy.clear()
        await wait_health(agent, "st/stale", "ok")


async def test_deleted(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A secret scheduled for deletion upstream is reported deleted."""
    sm.create_secret(Name="st/gone", SecretString="v")
    async with run_agent(proxy.url, prefetch__secrets=["st/gone"], **FAST) as agent:
        await agent.wait_ready()
        sm.delete_secret(SecretId="st/gone", RecoveryWindowInDays=7)
        await wait_health(agent, "st/gone", "deleted")


async def test_history_survives_restart(sm: Any, proxy: FaultProxy, run_agent: AgentFactory, tmp_path: Path) -> None:
    """Rotations an agent saw are restored from the audit file by the next run, with their how and seen_at."""
    audit = tmp_path / "audit.log"
    first = sm.create_secret(Name="st/restart", SecretString="one")["VersionId"]
    settings = {"prefetch__secrets": ["st/restart"], "audit__path": str(audit), **FAST}
    async with run_agent(proxy.url, **settings) as agent:
        await agent.wait_ready()
        second = sm.put_secret_value(SecretId="st/restart", SecretString="two")["VersionId"]

        async def rotated() -> list[dict[str, Any]] | None:
            history = (await secret_entry(agent, "st/restart"))["history"]
            return history if history and history[0]["version_id"] == second else None

        before = await eventually(rotated, timeout=30, interval=0.1, message="the rotation")
    async with run_agent(proxy.url, **settings, status__seed_history=False) as agent:  # the audit file alone
        await agent.wait_ready()
        history = (await secret_entry(agent, "st/restart"))["history"]
        assert history[0] == before[0] and history[0]["how"] == "poll"
        assert history[0]["previous_version_id"] == first
    async with run_agent(proxy.url, **settings) as agent:  # the audit file and upstream's versions
        await agent.wait_ready()

        async def merged() -> list[dict[str, Any]] | None:
            history = (await secret_entry(agent, "st/restart"))["history"]
            return history if len(history) == 2 else None

        history = await eventually(merged, timeout=30, interval=0.1, message="history seeded and restored")
        assert [(h["version_id"], h["how"]) for h in history] == [(second, "poll"), (first, "history")]
