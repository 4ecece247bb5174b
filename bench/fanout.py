"""SNS fan-out benchmark: N agent processes on one topic, each with its own filtered queue.

Each of ``--agents`` agents (real processes, against moto) caches ``--per-agent``
secrets out of a pool of ``--secrets``, spread so that each secret is cached by
a few agents. Polling is off (interval one hour): only events can refresh. The
benchmark then rotates ``--rotations`` secrets one at a time (PutSecretValue,
then one EventBridge-shaped event published to the topic) and measures, for
every agent caching the rotated secret, the time from the publish to the agent
serving the new value; it also counts the event messages each agent received
(what the filter let through) against the events published, and the AWS calls
each agent made to set up, run and tear down its queue (from its /metrics).

Run: ``.venv/bin/python -m bench.fanout`` (about a minute with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import statistics
import subprocess
import time
from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.dev.emulator import MotoServer, free_port
from bench.common import REGION, agent_command, agent_env, moto_client

SQS_SNS_OPS = (
    "CreateQueue",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "Subscribe",
    "SetSubscriptionAttributes",
    "TagQueue",
    "ReceiveMessage",
    "DeleteMessage",
    "Unsubscribe",
    "DeleteQueue",
)


def event(arn: str) -> str:
    return json.dumps(
        {
            "source": "aws.secretsmanager",
            "detail-type": "AWS API Call via CloudTrail",
            "region": REGION,
            "detail": {"eventName": "PutSecretValue", "requestParameters": {"secretId": arn}},
        }
    )


async def metrics(session: aiohttp.ClientSession, port: int, token: str) -> dict[tuple[str, str], float]:
    async with session.get(
        f"http://127.0.0.1:{port}/metrics", headers={"X-Aws-Parameters-Secrets-Token": token}
    ) as reply:
        text = await reply.text()
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "secrets_agent_upstream_calls_total":
                key = ("call", sample.labels["operation"])
                found[key] = found.get(key, 0.0) + sample.value
            elif sample.name == "secrets_agent_event_messages_total":
                found[("event", sample.labels["outcome"])] = sample.value
    return found


async def wait_value(session: aiohttp.ClientSession, port: int, token: str, name: str, want: str) -> float:
    started = time.monotonic()
    while True:
        async with session.get(
            f"http://127.0.0.1:{port}/value/{name}", headers={"X-Aws-Parameters-Secrets-Token": token}
        ) as reply:
            if reply.status == 200 and await reply.text() == want:
                return time.monotonic() - started
        if time.monotonic() - started > 30:
            raise RuntimeError(f"agent on {port} never served the new {name}")
        await asyncio.sleep(0.005)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--secrets", type=int, default=30)
    parser.add_argument("--per-agent", type=int, default=10)
    parser.add_argument("--rotations", type=int, default=30)
    args = parser.parse_args()
    token = "tok-" + secrets.token_hex(16)
    with MotoServer() as moto:
        sm = moto_client(moto.url)
        sns = moto_client(moto.url, "sns")
        sqs = moto_client(moto.url, "sqs")
        topic = sns.create_topic(Name="bench-fanout")["TopicArn"]
        names = [f"bench/fan/{i:03d}" for i in range(args.secrets)]
        arns = {name: sm.create_secret(Name=name, SecretString="v0")["ARN"] for name in names}
        cached = [
            [names[(a * args.per_agent + k) % args.secrets] for k in range(args.per_agent)] for a in range(args.agents)
        ]
        ports = [free_port() for _ in range(args.agents)]
        procs = []
        for port, mine in zip(ports, cached, strict=True):
            env = agent_env(
                token,
                {
                    "events_sns_topic_arn": topic,
                    "refresh_interval_seconds": "3600",
                    "prefetch_secrets": ",".join(mine),
                    "log_level": "warning",
                },
            )
            procs.append(
                subprocess.Popen(
                    agent_command(port, moto.url), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
            )
        try:
            async with aiohttp.ClientSession() as session:
                # Ready, and subscribed with a filter naming every prefetched secret.
                deadline = time.monotonic() + 60
                while True:
                    subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
                    policies = [
                        sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"].get(
                            "FilterPolicy", ""
                        )
                        for s in subs
                    ]
                    complete = [any(all(name in p for name in mine) for mine in cached) for p in policies]
                    if len(subs) == args.agents and all(complete):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("agents did not subscribe in time")
                    await asyncio.sleep(0.2)
                setup = [await metrics(session, port, token) for port in ports]
                latencies: list[float] = []
                rotated = Counter[int]()
                for r in range(args.rotations):
                    name = names[r % args.secrets]
                    value = f"v{r + 1}"
                    sm.put_secret_value(SecretId=name, SecretString=value)
                    holders = [i for i, mine in enumerate(cached) if name in mine]
                    sns.publish(TopicArn=topic, Message=event(arns[name]))
                    waits = await asyncio.gather(*(wait_value(session, ports[i], token, name, value) for i in holders))
                    latencies.extend(waits)
                    for i in holders:
                        rotated[i] += 1
                await asyncio.sleep(1)
                after = [await metrics(session, port, token) for port in ports]
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            stop_started = time.monotonic()
            for proc in procs:
                proc.wait(timeout=60)
            stopped_in = time.monotonic() - stop_started
        left_queues = sqs.list_queues(QueueNamePrefix="secrets-agent-").get("QueueUrls", [])
        left_subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]

    received = [sum(v for (kind, _), v in m.items() if kind == "event") for m in after]
    print(f"{args.agents} agents x {args.per_agent} secrets (pool {args.secrets}), {args.rotations} rotations")
    print(
        f"publish -> served: n={len(latencies)} p50={statistics.median(latencies) * 1000:.0f} ms "
        f"p99={sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms max={max(latencies) * 1000:.0f} ms"
    )
    print(
        f"event messages received per agent: {received} "
        f"(events for its secrets: {[rotated[i] for i in range(args.agents)]}; published: {args.rotations}); "
        f"handled: {[m.get(('event', 'handled'), 0) for m in after]}"
    )
    setup_calls = {op: setup[0].get(("call", op), 0) for op in SQS_SNS_OPS if setup[0].get(("call", op))}
    print(f"SQS/SNS calls by agent 0 to get going: {setup_calls}")
    print(
        f"all {args.agents} agents stopped (SIGTERM) in {stopped_in:.1f} s; "
        f"queues left: {len(left_queues)}, subscriptions left: {len(left_subs)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
