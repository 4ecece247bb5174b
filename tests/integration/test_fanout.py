"""Events for a fleet through SNS fan-out, against moto: each agent's own queue, its filter, clean-up and sweeping."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import boto3

from agent.dev.emulator import MotoServer, free_port
from agent.upstream.fanout import NOTHING_CACHED, RETENTION_SECONDS, TAG_CREATED, TAG_HEARTBEAT, TAG_HOST, TAG_TOPIC
from tests.support.agent import REGION, AgentFactory, AgentProcess, run_cli
from tests.support.events import eventbridge_message, wait_for_value
from tests.support.waiting import eventually

PREFIX = "secrets-agent-"
StartProcess = Callable[..., AgentProcess]


def clients(moto: MotoServer) -> tuple[Any, Any]:
    return (
        boto3.client("sns", region_name=REGION, endpoint_url=moto.url),
        boto3.client("sqs", region_name=REGION, endpoint_url=moto.url),
    )


def subscriptions(sns: Any, topic: str) -> list[dict[str, Any]]:
    return list(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"])


def queues(sqs: Any, prefix: str = PREFIX) -> list[str]:
    return list(sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []))


async def filter_names(sns: Any, topic: str, wanted: set[str], count: int = 1) -> list[dict[str, Any]]:
    """Wait until ``count`` subscriptions on ``topic`` filter for (at least) ``wanted``; their attributes."""

    def ready() -> list[dict[str, Any]] | None:
        found = []
        for sub in subscriptions(sns, topic):
            attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
            policy = json.loads(attributes.get("FilterPolicy") or "{}")
            values = policy.get("detail", {}).get("requestParameters", {}).get("secretId", [])
            if wanted <= {value for value in values if isinstance(value, str)}:
                found.append(attributes)
        return found if len(found) == count else None

    result = await eventually(ready, timeout=30, interval=0.2, message=f"{count} subscriptions filtering for {wanted}")
    return result


async def test_own_queue_subscribed_filtered_and_removed_on_stop(
    sm: Any, moto: MotoServer, run_agent: AgentFactory
) -> None:
    """Own tagged queue (topic-only policy, short retention), raw body-filtered subscription; both gone after stop."""
    sns, sqs = clients(moto)
    topic = sns.create_topic(Name="secret-events")["TopicArn"]
    arn = sm.create_secret(Name="fan/db", SecretString="v1")["ARN"]
    async with run_agent(
        moto.url, unix=False, events__sns_topic_arn=topic, events__wait_time_seconds=1, prefetch__secrets=["fan/db"]
    ) as agent:
        await agent.wait_ready()
        (attributes,) = await filter_names(sns, topic, {"fan/db"})
        assert attributes["Protocol"] == "sqs"
        assert attributes["RawMessageDelivery"] == "true"
        assert attributes["FilterPolicyScope"] == "MessageBody"
        values = json.loads(attributes["FilterPolicy"])["detail"]["requestParameters"]["secretId"]
        assert values == ["fan/db", {"prefix": arn[:-7]}]  # the name, and both ARN forms by prefix
        (url,) = queues(sqs)
        queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["Endpoint"] == queue["QueueArn"]
        assert queue["MessageRetentionPeriod"] == str(RETENTION_SECONDS)
        (statement,) = json.loads(queue["Policy"])["Statement"]
        assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": topic}}
        tags = sqs.list_queue_tags(QueueUrl=url)["Tags"]
        assert {TAG_HOST, TAG_CREATED, TAG_HEARTBEAT} <= set(tags) and tags[TAG_TOPIC] == topic
        assert abs(float(tags[TAG_HEARTBEAT]) - time.time()) < 3600
        # fan/db2's ARN starts with fan/db's partial ARN, so its event passes the filter: the agent ignores it
        # and, the queue being its own, deletes it rather than leaving it to be redelivered.
        lookalike = sm.create_secret(Name="fan/db2", SecretString="x")["ARN"]
        sns.publish(TopicArn=topic, Message=eventbridge_message("PutSecretValue", lookalike))

        async def ignored() -> bool:
            return await agent.metric("secrets_agent_event_messages_total", outcome="ignored") == 1

        await eventually(ignored, timeout=30, interval=0.1, message="the look-alike event to be ignored")

        def queue_empty() -> bool:
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
            return sum(int(counts[name]) for name in names) == 0

        await eventually(queue_empty, timeout=30, interval=0.1, message="the ignored message to be deleted")
    assert subscriptions(sns, topic) == []
    assert queues(sqs) == []


async def test_filter_follows_secrets_cached_later(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """A secret first cached by a read is added to the filter, and then its events reach the agent."""
    sns, _ = clients(moto)
    topic = sns.create_topic(Name="secret-events")["TopicArn"]
    arn = sm.create_secret(Name="late/key", SecretString="old")["ARN"]
    async with run_agent(
        moto.url, unix=False, events__sns_topic_arn=topic, events__wait_time_seconds=1, refresh__interval_seconds=3600
    ) as agent:
        await agent.wait_ready()
        await filter_names(sns, topic, {NOTHING_CACHED})  # nothing cached: nothing delivered
        assert (await agent.get("/value/late/key")).text == "old"
        await filter_names(sns, topic, {"late/key"})
        sm.put_secret_value(SecretId="late/key", SecretString="new")
        sns.publish(TopicArn=topic, Message=eventbridge_message("PutSecretValue", arn))
        await wait_for_value(agent, "/value/late/key", "new", timeout=30)


async def test_past_snss_limit_every_event_is_delivered(sm: Any, moto: MotoServer, run_agent: AgentFactory) -> None:
    """With 26 secrets cached (52 values, over 150 combinations) the filter becomes every Secrets Manager event."""
    sns, _ = clients(moto)
    topic = sns.create_topic(Name="big")["TopicArn"]
    names = [f"big/s{i:02d}" for i in range(26)]
    arns = [sm.create_secret(Name=name, SecretString="old")["ARN"] for name in names]
    async with run_agent(
        moto.url,
        unix=False,
        events__sns_topic_arn=topic,
        events__wait_time_seconds=1,
        refresh__interval_seconds=3600,
        prefetch__secrets=names,
    ) as agent:
        await agent.wait_ready()

        def unfiltered() -> bool:
            policies = [
                sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]["FilterPolicy"]
                for sub in subscriptions(sns, topic)
            ]
            return [json.loads(policy) for policy in policies] == [{"source": ["aws.secretsmanager"]}]

        await eventually(unfiltered, timeout=30, interval=0.2, message="the filter to give way to every event")
        sm.put_secret_value(SecretId=names[-1], SecretString="new")
        sns.publish(TopicArn=topic, Message=eventbridge_message("PutSecretValue", arns[-1]))
        await wait_for_value(agent, f"/value/{names[-1]}", "new", timeout=30)


async def test_rotation_event_reaches_two_agents_through_one_topic(
    sm: Any, moto: MotoServer, run_agent: AgentFactory
) -> None:
    """One event on the topic refreshes two agents; an event for a secret neither caches is filtered out by SNS."""
    sns, _ = clients(moto)
    topic = sns.create_topic(Name="fleet-events")["TopicArn"]
    created = sm.create_secret(Name="fleet/db", SecretString="v1")
    other = sm.create_secret(Name="fleet/other", SecretString="x")["ARN"]
    settings = {
        "unix": False,
        "events__sns_topic_arn": topic,
        "events__wait_time_seconds": 1,
        "refresh__interval_seconds": 3600,  # polling cannot be what picks it up
        "prefetch__secrets": ["fleet/db"],
    }
    async with run_agent(moto.url, **settings) as first, run_agent(moto.url, **settings) as second:
        await first.wait_ready()
        await second.wait_ready()
        await filter_names(sns, topic, {"fleet/db"}, count=2)
        sns.publish(TopicArn=topic, Message=eventbridge_message("PutSecretValue", other))
        pending = sm.put_secret_value(SecretId="fleet/db", SecretString="v2", VersionStages=["AWSPENDING"])
        sm.update_secret_version_stage(
            SecretId="fleet/db",
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending["VersionId"],
            RemoveFromVersionId=created["VersionId"],
        )
        body = eventbridge_message("UpdateSecretVersionStage", created["ARN"], arn_key="arn", secret_id="fleet/db")
        sns.publish(TopicArn=topic, Message=body)
        await asyncio.gather(
            wait_for_value(first, "/value/fleet/db", "v2", timeout=30),
            wait_for_value(second, "/value/fleet/db", "v2", timeout=30),
        )
        for agent in (first, second):
            assert await agent.metric("secrets_agent_rotations_total", how="event") == 1
            # moto delivers at publish time: the unrelated event was published first and never arrived.
            assert await agent.metric("secrets_agent_event_messages_total", outcome="ignored") == 0
            assert await agent.metric("secrets_agent_event_messages_total", outcome="handled") == 1
    assert subscriptions(sns, topic) == []


def sweep(moto: MotoServer, *extra: str) -> str:
    result = run_cli(["sweep-queues", "--endpoint-url", moto.url, "--region", REGION, *extra])
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_sweep_removes_a_killed_agents_queue_and_leaves_a_live_one(
    moto: MotoServer, run_agent: AgentFactory, agent_process: StartProcess
) -> None:
    """sweep-queues removes a SIGKILLed agent's queue and subscription and a dangling one; live and foreign stay."""
    sns, sqs = clients(moto)
    topic = sns.create_topic(Name="swept")["TopicArn"]
    bystander = sqs.create_queue(QueueName=PREFIX + "not-an-agent")["QueueUrl"]  # the prefix, but no agent tags
    bystander_arn = sqs.get_queue_attributes(QueueUrl=bystander, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=bystander_arn)
    dead = agent_process(
        [
            "run",
            *("--http-port", str(free_port()), "--endpoint-url", moto.url, "--region", REGION),
            "--log-level",
            "info",
        ],
        {"SECRETS_AGENT_EVENTS_SNS_TOPIC_ARN": topic, "SECRETS_AGENT_EVENTS_WAIT_TIME_SECONDS": "1"},
    )
    await asyncio.to_thread(dead.wait_for, '"sns_subscribed"', 60)
    assert await asyncio.to_thread(dead.stop, signal.SIGKILL) == -signal.SIGKILL
    (orphan,) = [url for url in queues(sqs) if url != bystander]
    # An hour on: its heartbeat was last set then.
    sqs.tag_queue(QueueUrl=orphan, Tags={TAG_HEARTBEAT: str(int(time.time()) - 3600)})
    # Another agent's queue deleted by hand left its subscription dangling.
    gone = sqs.create_queue(QueueName=PREFIX + "gone-0000")["QueueUrl"]
    gone_arn = sqs.get_queue_attributes(QueueUrl=gone, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=gone_arn)
    sqs.delete_queue(QueueUrl=gone)
    async with run_agent(moto.url, unix=False, events__sns_topic_arn=topic, events__wait_time_seconds=1) as live:
        await live.wait_ready()
        await filter_names(sns, topic, {NOTHING_CACHED}, count=2)  # the live agent and the dead one
        live_queue = next(url for url in queues(sqs) if url not in (orphan, bystander))

        dry = sweep(moto, "--dry-run", "--topic-arn", topic)
        assert f"would remove queue {orphan}" in dry and "would remove 1 queues and 2 subscriptions" in dry
        assert len(subscriptions(sns, topic)) == 4 and orphan in queues(sqs)

        report = sweep(moto, "--older-than", "1800", "--topic-arn", topic)
        assert "removed 1 queues and 2 subscriptions; kept 1 live queues" in report
        assert sorted(queues(sqs)) == sorted([live_queue, bystander])
        live_arn = sqs.get_queue_attributes(QueueUrl=live_queue, AttributeNames=["QueueArn"])["Attributes"]
        remaining = sorted(sub["Endpoint"] for sub in subscriptions(sns, topic))
        assert remaining == sorted([live_arn["QueueArn"], bystander_arn])
        # A second sweep finds nothing more to remove.
        assert "removed 0 queues and 0 subscriptions" in sweep(moto, "--topic-arn", topic)
    assert queues(sqs) == [bystander]


def test_sweep_warns_when_its_age_could_take_live_queues(moto: MotoServer) -> None:
    """--older-than below two heartbeats warns on stderr (a live agent's queue may go) and still sweeps."""
    _sns, sqs = clients(moto)
    queue = sqs.create_queue(
        QueueName=PREFIX + "young", tags={TAG_HOST: "node-1", TAG_HEARTBEAT: str(time.time() - 120)}
    )["QueueUrl"]
    result = run_cli(["sweep-queues", "--endpoint-url", moto.url, "--region", REGION, "--older-than", "60"])
    assert result.returncode == 0 and "warning: --older-than 60 is under two heartbeats" in result.stderr
    assert queue not in queues(sqs)
    quiet = run_cli(["sweep-queues", "--endpoint-url", moto.url, "--region", REGION, "--older-than", "600"])
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
