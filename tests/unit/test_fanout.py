"""Pure logic of SNS fan-out: queue names, the queue policy, the filter policy and its limits, the sweep's clock."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from agent.core.errors import UpstreamRejected
from agent.upstream.calls import UpstreamCalls
from agent.upstream.fanout import (
    MAX_COMBINATIONS,
    NO_FILTER,
    NOTHING_CACHED,
    QUEUE_NAME_MAX,
    FanoutQueue,
    build_filter,
    complexity,
    filter_values,
    queue_name,
    queue_policy,
)
from agent.upstream.sweep import heartbeat_of

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf"
SQS_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def secret(name: str) -> tuple[str, str]:
    return ARN.format(name), name


def test_queue_name_keeps_prefix_host_and_suffix() -> None:
    """A plain host name is kept whole between the prefix and the random suffix."""
    assert queue_name("secrets-agent-", "web-7f9c", "0a1b2c3d") == "secrets-agent-web-7f9c-0a1b2c3d"


@pytest.mark.parametrize(
    "host",
    ["ip-10-0-0-1.eu-west-1.compute.internal", "x" * 300, "...", "", "pod_name with spaces/and:colons"],
)
def test_queue_name_within_sqs_rules(host: str) -> None:
    """Whatever the host name, the name is SQS-legal (1..80 of A-Z a-z 0-9 - _) with the prefix and suffix."""
    name = queue_name("secrets-agent-", host, "0a1b2c3d")
    assert SQS_NAME.fullmatch(name) and len(name) <= QUEUE_NAME_MAX
    assert name.startswith("secrets-agent-") and name.endswith("-0a1b2c3d")


def test_queue_name_dots_become_dashes() -> None:
    """An EC2-style host name's dots become dashes."""
    assert queue_name("p-", "ip-10-0-0-1.ec2.internal", "ff") == "p-ip-10-0-0-1-ec2-internal-ff"


def test_queue_policy_admits_only_the_topic() -> None:
    """The queue policy allows SNS to send to this queue only on behalf of this topic."""
    policy = json.loads(queue_policy("arn:aws:sqs:r:1:q", "arn:aws:sns:r:1:t"))
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow" and statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == "arn:aws:sqs:r:1:q"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": "arn:aws:sns:r:1:t"}}


def test_filter_values_name_and_arn_prefix_deduplicated() -> None:
    """Each secret is matched by its name and by a prefix covering its partial and full ARN, once each."""
    values = filter_values([secret("b"), secret("a"), secret("a"), (ARN.format("c"), None)])
    assert values == ["a", "b", *({"prefix": ARN.format(n)[:-7]} for n in "abc")]


def test_filter_matches_where_the_events_name_the_secret() -> None:
    """The policy filters the message body at detail.requestParameters.secretId (what CloudTrail API events carry)."""
    applied = build_filter([secret("app/db")])
    assert applied.filtered and applied.values == 2
    policy = json.loads(applied.policy)
    assert policy == {"detail": {"requestParameters": {"secretId": ["app/db", {"prefix": ARN.format("app/db")[:-7]}]}}}


def test_nothing_cached_matches_nothing() -> None:
    """With nothing cached the filter lets no event through (an empty array is not a valid policy)."""
    policy = json.loads(build_filter([]).policy)
    assert policy["detail"]["requestParameters"]["secretId"] == [NOTHING_CACHED]


def test_filter_within_150_combinations() -> None:
    """25 secrets (50 values at depth 3) fit SNS's 150 combinations; one more and the agent goes unfiltered."""
    assert complexity(50) == MAX_COMBINATIONS
    fits = build_filter([secret(f"s{i}") for i in range(25)])
    assert fits.filtered and fits.values == 50
    over = build_filter([secret(f"s{i}") for i in range(26)])
    assert over.policy == NO_FILTER and not over.filtered
    assert over.reason is not None and "156 combinations" in over.reason


def test_filter_within_256_kb() -> None:
    """A policy over 256 KB is not sent: no filter, and the reason says so."""
    huge = [(ARN.format("n" * 6000 + str(i)), None) for i in range(45)]
    applied = build_filter(huge)
    assert applied.policy == NO_FILTER and applied.reason is not None and "256 KB" in applied.reason


def test_heartbeat_of_tags() -> None:
    """Only a queue carrying the agent's host tag is an agent's; its heartbeat, else its creation time, dates it."""
    assert heartbeat_of({"other": "x"}) is None
    assert heartbeat_of({"secrets-agent:host": "h", "secrets-agent:heartbeat": "200", "secrets-agent:created-at": "1"})
    assert heartbeat_of({"secrets-agent:host": "h", "secrets-agent:created-at": "100"}) == 100.0
    assert heartbeat_of({"secrets-agent:host": "h", "secrets-agent:heartbeat": "junk"}) == 0.0


class RefusingSns:
    """An SNS client stand-in that refuses any filter policy but the match-all one (a limit SNS counts its own way)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def set_subscription_attributes(self, **kwargs: Any) -> None:
        self.sent.append(kwargs["AttributeValue"])
        if kwargs["AttributeValue"] != NO_FILTER:
            error = {"Error": {"Code": "InvalidParameter", "Message": "Filter policy is too complex"}}
            raise ClientError(error, "SetSubscriptionAttributes")  # type: ignore[arg-type]


async def test_refused_filter_goes_unfiltered_once() -> None:
    """A refused filter gives way to none, is not resent for the same cache, and is retried when the cache changes."""
    cached = [secret("a")]
    sns = RefusingSns()
    calls = UpstreamCalls(max_workers=1)
    try:
        fanout = FanoutQueue(None, sns, calls, "arn:aws:sns:r:1:t", lambda: cached, prefix="p-", name="p-q")
        fanout.subscription_arn = "arn:aws:sns:r:1:t:sub"
        assert await fanout.update_filter()
        assert sns.sent == [build_filter(cached).policy, NO_FILTER]
        assert fanout.applied is not None and not fanout.applied.filtered
        assert not await fanout.update_filter()  # same cache: the refused policy is not sent again
        cached.append(secret("b"))
        assert await fanout.update_filter()
        assert sns.sent[2:] == [build_filter(cached).policy]  # already unfiltered: NO_FILTER not sent again
    finally:
        calls.close()


async def test_transient_filter_failure_is_raised_for_retry() -> None:
    """A throttled SetSubscriptionAttributes is raised (and retried by the maintenance loop), not taken as refusal."""

    class Throttled:
        def set_subscription_attributes(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow"}}, "SetSubscriptionAttributes")  # type: ignore[arg-type]

    calls = UpstreamCalls(max_workers=1)
    try:
        fanout = FanoutQueue(
            None, Throttled(), calls, "arn:aws:sns:r:1:t", lambda: [secret("a")], prefix="p-", name="q"
        )
        fanout.subscription_arn = "sub"
        with pytest.raises(Exception) as caught:
            await fanout.update_filter()
        assert not isinstance(caught.value, UpstreamRejected) and fanout.applied is None
    finally:
        calls.close()


class QuotaSns:
    """SNS at its filter-policy quota: Subscribe with any filter policy is refused, without one accepted."""

    def __init__(self) -> None:
        self.subscribed: list[dict[str, str]] = []
        self.updates = 0

    def subscribe(self, **kwargs: Any) -> dict[str, str]:
        if "FilterPolicy" in kwargs["Attributes"]:
            error = {"Error": {"Code": "FilterPolicyLimitExceeded", "Message": "quota"}}
            raise ClientError(error, "Subscribe")  # type: ignore[arg-type]
        self.subscribed.append(kwargs["Attributes"])
        return {"SubscriptionArn": "arn:aws:sns:r:1:t:sub"}

    def set_subscription_attributes(self, **_: Any) -> None:
        self.updates += 1


class FakeSqs:
    """Enough of SQS for FanoutQueue.open()."""

    def create_queue(self, **kwargs: Any) -> dict[str, str]:
        return {"QueueUrl": "https://sqs/q"}

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:r:1:q"}}

    def set_queue_attributes(self, **_: Any) -> None:
        return None


async def test_filter_quota_at_subscribe_subscribes_bare() -> None:
    """Refused a filter at Subscribe (quota), the agent subscribes without one (raw) and stops trying to filter."""
    sns = QuotaSns()
    calls = UpstreamCalls(max_workers=1)
    try:
        fanout = FanoutQueue(FakeSqs(), sns, calls, "arn:aws:sns:r:1:t", lambda: [secret("a")], prefix="p-", name="q")
        assert await fanout.open() == "https://sqs/q"
        assert sns.subscribed == [{"RawMessageDelivery": "true"}]
        assert fanout.applied is not None and not fanout.applied.filtered
        assert not await fanout.update_filter() and sns.updates == 0
    finally:
        calls.close()


class SweepSqs:
    """Two agent queues (one silent an hour, one beating) and a foreign one, as SQS lists them."""

    def __init__(self, now: float) -> None:
        self.tags = {
            "https://sqs/1/secrets-agent-dead-1": {
                "secrets-agent:host": "a",
                "secrets-agent:heartbeat": str(now - 3600),
            },
            "https://sqs/1/secrets-agent-live-2": {"secrets-agent:host": "b", "secrets-agent:heartbeat": str(now - 60)},
            "https://sqs/1/secrets-agent-other": {},
        }
        self.deleted: list[str] = []

    def list_queues(self, **_: Any) -> dict[str, Any]:
        return {"QueueUrls": list(self.tags)}

    def list_queue_tags(self, QueueUrl: str) -> dict[str, Any]:
        return {"Tags": self.tags[QueueUrl]}

    def get_queue_attributes(self, QueueUrl: str, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:r:1:" + QueueUrl.rsplit("/", 1)[-1]}}

    def delete_queue(self, QueueUrl: str) -> None:
        self.deleted.append(QueueUrl)


class SweepSns:
    """A topic with subscriptions for each queue, plus one whose queue is gone and one in another account."""

    def __init__(self) -> None:
        endpoints = ["dead-1", "live-2", "other", "gone-3"]
        self.subs = [
            {"SubscriptionArn": f"sub-{name}", "Protocol": "sqs", "Endpoint": f"arn:aws:sqs:r:1:secrets-agent-{name}"}
            for name in endpoints
        ]
        self.subs.append(
            {"SubscriptionArn": "sub-elsewhere", "Protocol": "sqs", "Endpoint": "arn:aws:sqs:r:2:secrets-agent-x"}
        )
        self.removed: list[str] = []

    def list_subscriptions_by_topic(self, **_: Any) -> dict[str, Any]:
        return {"Subscriptions": self.subs}

    def unsubscribe(self, SubscriptionArn: str) -> None:
        self.removed.append(SubscriptionArn)


@pytest.mark.parametrize("dry_run", [False, True])
async def test_sweep_picks_silent_queues_and_dangling_subscriptions(dry_run: bool) -> None:
    """Sweep removes the silent agent queue and its subscription and the gone queue's; live, foreign, elsewhere stay."""
    from agent.upstream.sweep import Sweeper

    now = 10_000.0
    sqs, sns = SweepSqs(now), SweepSns()
    calls = UpstreamCalls(max_workers=1)
    try:
        sweeper = Sweeper(sqs, sns, calls, prefix="secrets-agent-", region="r", account="1", clock=lambda: now)
        report = await sweeper.sweep(older_than=1800, topics=["arn:aws:sns:r:1:t"], dry_run=dry_run)
    finally:
        calls.close()
    assert report.queues_removed == ["https://sqs/1/secrets-agent-dead-1"]
    assert report.queues_kept == ["https://sqs/1/secrets-agent-live-2"]
    assert report.subscriptions_removed == ["sub-dead-1", "sub-gone-3"]
    assert (sqs.deleted, sns.removed) == (
        ([], []) if dry_run else (report.queues_removed, ["sub-dead-1", "sub-gone-3"])
    )


class DenyingOnceSns:
    """Subscribe refused once for lack of permission (AccessDenied), then allowed."""

    def __init__(self) -> None:
        self.subscribed: list[dict[str, str]] = []
        self.denied = False

    def subscribe(self, **kwargs: Any) -> dict[str, str]:
        if not self.denied:
            self.denied = True
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "Subscribe")  # type: ignore[arg-type]
        self.subscribed.append(kwargs["Attributes"])
        return {"SubscriptionArn": "arn:aws:sns:r:1:t:sub"}


class DeletingSqs(FakeSqs):
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_queue(self, QueueUrl: str) -> None:
        self.deleted.append(QueueUrl)


async def test_denied_subscribe_is_not_taken_for_a_filter_refusal() -> None:
    """A Subscribe denied by IAM deletes the half-made queue and fails; the next try subscribes with the filter."""
    from agent.core.errors import UpstreamDenied

    sns, sqs = DenyingOnceSns(), DeletingSqs()
    calls = UpstreamCalls(max_workers=1)
    try:
        fanout = FanoutQueue(sqs, sns, calls, "arn:aws:sns:r:1:t", lambda: [secret("a")], prefix="p-", name="q")
        with pytest.raises(UpstreamDenied):
            await fanout.open()
        assert sqs.deleted == ["https://sqs/q"] and fanout.queue_url is None
        await fanout.open()
        assert sns.subscribed[0]["FilterPolicy"] == build_filter([secret("a")]).policy
    finally:
        calls.close()


class SlowSubscribeSns:
    """Subscribe that takes effect upstream but answers only when released; Unsubscribe recorded."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.unsubscribed: list[str] = []

    def subscribe(self, **_: Any) -> dict[str, str]:
        self.started.set()
        self.release.wait(10)
        return {"SubscriptionArn": "arn:aws:sns:r:1:t:sub"}

    def unsubscribe(self, SubscriptionArn: str) -> None:
        self.unsubscribed.append(SubscriptionArn)


async def test_cancelled_during_subscribe_removes_the_subscription() -> None:
    """Shutdown while Subscribe is under way: the subscription it made is removed with the queue, not left behind."""
    sns, sqs = SlowSubscribeSns(), DeletingSqs()
    calls = UpstreamCalls(max_workers=2)
    try:
        fanout = FanoutQueue(sqs, sns, calls, "arn:aws:sns:r:1:t", lambda: [secret("a")], prefix="p-", name="q")
        opening = asyncio.create_task(fanout.open())
        assert await asyncio.to_thread(sns.started.wait, 10)
        opening.cancel()
        await asyncio.sleep(0)  # the cancellation reaches open() while Subscribe is still running
        sns.release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert sns.unsubscribed == ["arn:aws:sns:r:1:t:sub"] and sqs.deleted == ["https://sqs/q"]
        assert fanout.subscription_arn is None and fanout.queue_url is None
    finally:
        sns.release.set()
        calls.close()


class CountingSqs(DeletingSqs):
    """FakeSqs whose queues are numbered (one URL per CreateQueue)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def create_queue(self, **kwargs: Any) -> dict[str, str]:
        self.created.append(kwargs["QueueName"])
        return {"QueueUrl": f"https://sqs/{len(self.created)}"}


class RecordingSns:
    def __init__(self) -> None:
        self.unsubscribed: list[str] = []
        self.count = 0

    def subscribe(self, **_: Any) -> dict[str, str]:
        self.count += 1
        return {"SubscriptionArn": f"arn:aws:sns:r:1:t:sub-{self.count}"}

    def unsubscribe(self, SubscriptionArn: str) -> None:
        self.unsubscribed.append(SubscriptionArn)


async def test_gone_queue_is_replaced() -> None:
    """Its queue deleted under it (a sweep), the agent drops that subscription and listens on a new queue."""
    sns, sqs = RecordingSns(), CountingSqs()
    calls = UpstreamCalls(max_workers=1)
    listened: list[str] = []
    second = asyncio.Event()

    async def listen(url: str) -> None:
        listened.append(url)
        if len(listened) == 1:
            return  # the first queue is gone
        second.set()
        await asyncio.Event().wait()

    try:
        fanout = FanoutQueue(sqs, sns, calls, "arn:aws:sns:r:1:t", lambda: [secret("a")], prefix="p-")
        running = asyncio.create_task(fanout.run(listen))
        await asyncio.wait_for(second.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert listened == ["https://sqs/1", "https://sqs/2"]
        assert sns.unsubscribed == ["arn:aws:sns:r:1:t:sub-1"] and sqs.deleted == ["https://sqs/1"]
        assert len(set(sqs.created)) == 2 and fanout.subscription_arn == "arn:aws:sns:r:1:t:sub-2"
    finally:
        calls.close()


async def test_own_queue_gone_ends_the_listener() -> None:
    """ReceiveMessage on the agent's own queue answering "does not exist" ends its listener."""
    from agent.core.metrics import Metrics
    from agent.upstream.events import EventListener

    class GoneSqs:
        def receive_message(self, **_: Any) -> None:
            error = {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone"}}
            raise ClientError(error, "ReceiveMessage")  # type: ignore[arg-type]

    calls = UpstreamCalls(max_workers=1)
    try:

        async def refresh(_ref: str, _event: str) -> bool:
            return False

        listener = EventListener(
            GoneSqs(), calls, "https://sqs/q", refresh, metrics=Metrics(), wait_seconds=1, owned=True
        )
        await asyncio.wait_for(listener.run(), 10)
    finally:
        calls.close()


@pytest.mark.parametrize(
    ("code", "status", "gone"),
    [
        ("AWS.SimpleQueueService.NonExistentQueue", 400, True),  # SQS, query protocol
        ("QueueDoesNotExist", 400, True),  # SQS, JSON protocol
        ("NotFound", 404, True),  # SNS: the subscription
        ("ResourceNotFoundException", 400, True),
        ("AccessDenied", 403, False),
        ("RequestThrottled", 400, False),
        ("InternalError", 500, False),
    ],
)
def test_queue_gone_is_decided_by_the_error_code(code: str, status: int, gone: bool) -> None:
    """queue_gone (the listener's and the sweep's one test) is true for SQS's and SNS's does-not-exist errors only."""
    from agent.upstream.calls import translate
    from agent.upstream.events import queue_gone

    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        "ReceiveMessage",
    )
    assert queue_gone(translate(error, service="SQS")) is gone
