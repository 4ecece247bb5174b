"""Rotation-aware freshness against moto: polling, events through a real SQS queue, TTL mode."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import boto3

from agent.dev.emulator import MotoServer
from tests.support.agent import REGION, AgentFactory, AgentHandle, Reply
from tests.support.events import eventbridge_message, wait_for_value
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

VALUE_READS = ("GetSecretValue", "BatchGetSecretValue")


async def test_put_secret_value_picked_up_by_polling(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """PutSecretValue is picked up by polling without refreshNow; the old value is AWSPREVIOUS."""
    first = sm.create_secret(Name="poll/db", SecretString="one")["VersionId"]
    async with run_agent(proxy.url, refresh__interval_seconds=1, prefetch__secrets=["poll/db"]) as agent:
        await agent.wait_ready()
        assert (await agent.get("/value/poll/db")).text == "one"
        second = sm.put_secret_value(SecretId="poll/db", SecretString="two")["VersionId"]
        await wait_for_value(agent, "/value/poll/db", "two", timeout=30)
        current = (await agent.get("/v1/poll/db")).json()
        previous = await agent.get("/v1/poll/db?versionStage=AWSPREVIOUS")
        assert current["VersionId"] == second and current["VersionStages"] == ["AWSCURRENT"]
        assert previous.headers["X-Cache"] == "hit"
        assert (previous.json()["VersionId"], previous.json()["SecretString"]) == (first, "one")
        assert await agent.metric("secrets_agent_rotations_total", how="poll") == 1


async def test_stage_and_move_rotation(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A value staged only AWSPENDING is never served as current; after the stage move it is."""
    old = sm.create_secret(Name="poll/stage", SecretString="old")["VersionId"]
    async with run_agent(proxy.url, refresh__interval_seconds=1, prefetch__secrets=["poll/stage"]) as agent:
        await agent.wait_ready()
        pending = sm.put_secret_value(SecretId="poll/stage", SecretString="pending", VersionStages=["AWSPENDING"])
        await agent.wait_for_poll_passes(3)  # at least two whole polling passes see the pending version
        assert (await agent.get("/value/poll/stage")).text == "old"
        sm.update_secret_version_stage(
            SecretId="poll/stage",
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending["VersionId"],
            RemoveFromVersionId=old,
        )
        await wait_for_value(agent, "/value/poll/stage", "pending", timeout=30)
        previous = await agent.get("/value/poll/stage?versionStage=AWSPREVIOUS")
        assert previous.text == "old"


async def test_idle_polling_reads_no_values(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """With nothing rotating, polling makes no GetSecretValue/BatchGetSecretValue and confirms entries."""
    names = [f"idle/{i}" for i in range(30)]
    for name in names:
        sm.create_secret(Name=name, SecretString=name)
    async with run_agent(
        proxy.url, refresh__interval_seconds=1, cache__ttl_seconds=2, prefetch__secrets=names
    ) as agent:
        await agent.wait_ready()
        reads_after_prefetch = sum(proxy.calls[op] for op in VALUE_READS)
        since = time.monotonic()
        await agent.wait_for_poll_passes(3)
        # deliberate: > 2 TTLs, without confirmation every entry would have expired
        while time.monotonic() - since < 4.5:
            await agent.wait_for_poll_passes(1)
        # Read just after a pass: a loaded machine may stretch the gap between passes past the TTL,
        # but each pass confirms every entry, so the reads find them confirmed whatever the gaps were.
        replies = await asyncio.gather(*(agent.get(f"/value/{name}") for name in names))
        assert {r.headers["X-Cache"] for r in replies} == {"hit"}
        calls = dict(proxy.calls)  # before reading passes: passes only grow, so the bounds below stay upper bounds
        passes = await agent.metric("secrets_agent_poll_passes_total")
    assert sum(calls.get(op, 0) for op in VALUE_READS) == reads_after_prefetch
    assert passes >= 3
    # One ListSecrets page covers all 30 secrets; a round-robin DescribeSecret every 4th pass.
    assert calls.get("ListSecrets", 0) <= passes + 1
    assert calls.get("DescribeSecret", 0) <= passes // 4 + 1


async def test_ttl_mode_revalidates_on_read(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """mode=ttl makes no background calls; after the TTL a read triggers a revalidation that re-reads only on change."""
    sm.create_secret(Name="ttl/s", SecretString="a")
    async with run_agent(
        proxy.url, refresh__mode="ttl", refresh__interval_seconds=1, cache__ttl_seconds=2, prefetch__secrets=["ttl/s"]
    ) as agent:
        # A 2 s TTL: the steps that must fall inside one (a read after the confirmation, a moto
        # PutSecretValue and a read) keep their margin when a loaded machine stalls the loop.
        await agent.wait_ready()
        # The rotation history's one-off seed (one ListSecretVersionIds after prefetch) is not the refresher's;
        # a loaded machine can delay it past readiness, into the window below: it is awaited first.
        await eventually(lambda: proxy.calls["ListSecretVersionIds"] == 1, message="the history seed")
        before = sum(proxy.calls.values())
        await asyncio.sleep(2.2)  # deliberate: past the 2 s TTL, long enough for background calls to show
        assert sum(proxy.calls.values()) == before  # nothing in the background
        unchanged = await agent.get("/value/ttl/s")  # answered at once; DescribeSecret runs behind it
        assert (unchanged.text, unchanged.headers["X-Cache"]) == ("a", "revalidating")

        async def confirmed() -> bool:  # the proxy counts DescribeSecret before the agent has its answer
            return (await agent.get("/value/ttl/s")).headers["X-Cache"] == "hit"

        await eventually(confirmed, message="the revalidation to confirm the entry (TTL restarted)")
        assert (proxy.calls["DescribeSecret"], proxy.calls["GetSecretValue"]) == (1, 0)
        sm.put_secret_value(SecretId="ttl/s", SecretString="b")
        assert (await agent.get("/value/ttl/s")).text == "a"  # inside the TTL: still cached
        await asyncio.sleep(2.2)  # deliberate: let the 2 s TTL lapse
        assert (await agent.get("/value/ttl/s")).text == "a"  # the expired value, once, while it revalidates

        async def changed() -> bool:
            return (await agent.get("/value/ttl/s")).text == "b"

        await eventually(changed, message="the revalidation to install the new value")
        assert proxy.calls["GetSecretValue"] == 1


async def test_event_refreshes_at_once(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A PutSecretValue event on SQS refreshes the secret, polling off; handled messages are deleted, others kept."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto.url)
    queue = sqs.create_queue(QueueName="secrets-events")["QueueUrl"]
    arn = sm.create_secret(Name="ev/s", SecretString="before")["ARN"]
    async with run_agent(
        moto.url,
        refresh__interval_seconds=3600,  # polling cannot be what picks it up
        events__sqs_queue_url=queue,
        events__wait_time_seconds=1,
        prefetch__secrets=["ev/s"],
    ) as agent:
        await agent.wait_ready()
        sm.put_secret_value(SecretId="ev/s", SecretString="after")
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"source": "aws.ec2", "detail": {}}))
        sqs.send_message(QueueUrl=queue, MessageBody=eventbridge_message("PutSecretValue", arn))
        # Polling is off for the hour: only the event can bring the new value.
        await wait_for_value(agent, "/value/ev/s", "after", timeout=30)

        async def unrelated_message_seen() -> bool:
            return await agent.metric("secrets_agent_event_messages_total", outcome="ignored") >= 1

        await eventually(unrelated_message_seen, timeout=30, interval=0.1, message="the unrelated message ignored")
        assert await agent.metric("secrets_agent_event_messages_total", outcome="handled") == 1
        assert await agent.metric("secrets_agent_rotations_total", how="event") == 1
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    # The unrelated message was left for its owner; the handled one is gone.
    assert (
        int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 1
    )


async def test_event_by_name_for_stage_move(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """An UpdateSecretVersionStage event naming the secret by name (lower-case arn key) refreshes it."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto.url)
    queue = sqs.create_queue(QueueName="secrets-events-2")["QueueUrl"]
    created = sm.create_secret(Name="ev/stage", SecretString="v1")
    async with run_agent(
        moto.url,
        refresh__interval_seconds=3600,
        events__sqs_queue_url=queue,
        events__wait_time_seconds=1,
        prefetch__secrets=["ev/stage"],
    ) as agent:
        await agent.wait_ready()
        pending = sm.put_secret_value(SecretId="ev/stage", SecretString="v2", VersionStages=["AWSPENDING"])
        sm.update_secret_version_stage(
            SecretId="ev/stage",
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending["VersionId"],
            RemoveFromVersionId=created["VersionId"],
        )
        body = eventbridge_message("UpdateSecretVersionStage", created["ARN"], arn_key="arn", secret_id="ev/stage")
        sqs.send_message(QueueUrl=queue, MessageBody=body)
        await wait_for_value(agent, "/value/ev/stage", "v2", timeout=30)


async def test_deleted_secret_surfaces_on_next_read(sm: Any, proxy: FaultProxy, run_agent: AgentFactory) -> None:
    """A secret deleted upstream is not served from cache after the next pass: the read reports it."""
    sm.create_secret(Name="gone/s", SecretString="v")
    async with run_agent(proxy.url, refresh__interval_seconds=1, prefetch__secrets=["gone/s"]) as agent:
        await agent.wait_ready()
        assert (await agent.get("/value/gone/s")).status == 200
        sm.delete_secret(SecretId="gone/s", ForceDeleteWithoutRecovery=True)

        async def no_longer_served() -> Reply | None:
            reply = await agent.get("/value/gone/s")
            return reply if reply.status != 200 else None

        reply = await eventually(
            no_longer_served, timeout=30, interval=0.1, message="the deleted secret to stop being served"
        )
        assert reply.status == 404 and reply.json()["__type"] == "ResourceNotFoundException"


async def test_continuous_rotation_readers_never_see_errors_or_non_current(
    sm: Any, proxy: FaultProxy, run_agent: AgentFactory
) -> None:
    """Under continuous rotation (both ways) readers only ever see values that were AWSCURRENT, never an error."""
    first = sm.create_secret(Name="churn/s", SecretString="v0")["VersionId"]
    ever_current = {"v0"}
    never_current: set[str] = set()
    seen: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def reader(agent: AgentHandle) -> None:
        while not stop.is_set():
            reply = await agent.get("/value/churn/s")
            seen.append((reply.status, reply.text))
            await asyncio.sleep(0.01)  # pace the readers

    def rotate() -> None:
        # PutSecretValue rotations first, then stage-and-move ones: moto 5.2.5 leaves two
        # versions labelled AWSCURRENT when a plain PutSecretValue follows a stage move,
        # a state real Secrets Manager never shows.
        current = first
        for i in range(1, 13):
            value = f"v{i}"
            if i <= 5:
                current = sm.put_secret_value(SecretId="churn/s", SecretString=value)["VersionId"]
                ever_current.add(value)
            else:
                if i % 3 == 0:  # a pending version that is abandoned, never moved to current
                    abandoned = f"abandoned{i}"
                    never_current.add(abandoned)
                    sm.put_secret_value(SecretId="churn/s", SecretString=abandoned, VersionStages=["AWSPENDING"])
                    time.sleep(0.3)  # deliberate: leave it pending while readers and polling run
                staged = sm.put_secret_value(SecretId="churn/s", SecretString=value, VersionStages=["AWSPENDING"])
                time.sleep(0.3)  # deliberate: staged but not yet current while readers and polling run
                ever_current.add(value)
                sm.update_secret_version_stage(
                    SecretId="churn/s",
                    VersionStage="AWSCURRENT",
                    MoveToVersionId=staged["VersionId"],
                    RemoveFromVersionId=current,
                )
                current = staged["VersionId"]
            time.sleep(0.4)  # deliberate: pace the rotations so polling passes fall between them

    async with run_agent(proxy.url, refresh__interval_seconds=1, prefetch__secrets=["churn/s"]) as agent:
        await agent.wait_ready()
        readers = [asyncio.create_task(reader(agent)) for _ in range(4)]
        try:
            await asyncio.to_thread(rotate)
            await wait_for_value(agent, "/value/churn/s", "v12", timeout=30)
        finally:
            stop.set()
            await asyncio.gather(*readers)
    assert len(seen) > 100
    assert {status for status, _ in seen} == {200}
    values = {text for _, text in seen}
    assert values <= ever_current, values - ever_current
    assert not values & never_current
    assert len(values) > 3  # readers followed the rotations
