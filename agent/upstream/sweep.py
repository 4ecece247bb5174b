"""``secrets-agent sweep-queues``: remove the queues and subscriptions that killed agents left behind.

An agent in SNS mode (:mod:`agent.upstream.fanout`) deletes its queue and
subscription when it stops; SIGKILL, an OOM kill or a lost node does not let
it. Such an orphan costs little (a filtered subscription, a queue whose
messages expire in minutes) but each counts against the topic's subscription
and filter-policy quotas, so a fleet that churns should sweep them, e.g. from a
scheduled job:

- a queue whose name starts with the prefix, that carries the agent's
  :data:`~agent.upstream.fanout.TAG_HOST` tag (never anyone else's queue), and
  whose :data:`~agent.upstream.fanout.TAG_HEARTBEAT` is older than
  ``older_than`` seconds (a live agent refreshes it every
  :data:`~agent.upstream.fanout.HEARTBEAT_SECONDS`) is deleted, after its
  subscriptions on the topic it names (:data:`~agent.upstream.fanout.TAG_TOPIC`);
- a subscription on a topic given with ``--topic-arn`` (or
  ``events.sns_topic_arn``) whose endpoint is an SQS queue with the prefix, in
  this account and region, that no longer exists is removed.

Those topics' subscriptions are listed before the queues, so an agent that
creates its queue and subscribes during a sweep is never mistaken for a
dangling subscription (a topic known only from a queue's tag is listed later,
and used only to unsubscribe that queue). Every call goes through
:class:`~agent.upstream.calls.UpstreamCalls`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import UpstreamError
from agent.core.log import get_logger
from agent.upstream.calls import UpstreamCalls
from agent.upstream.events import queue_gone
from agent.upstream.fanout import HEARTBEAT_SECONDS, SNS, SQS, TAG_CREATED, TAG_HEARTBEAT, TAG_HOST, TAG_TOPIC

log = get_logger("agent.upstream.sweep")

DEFAULT_OLDER_THAN_SECONDS = 6 * HEARTBEAT_SECONDS  # six missed heartbeats
MIN_OLDER_THAN_SECONDS = 2 * HEARTBEAT_SECONDS  # below this a live agent's queue could look orphaned


@dataclass
class SweepReport:
    """What a sweep removed (or, dry, would remove) and what it left."""

    queues_removed: list[str] = field(default_factory=list)
    subscriptions_removed: list[str] = field(default_factory=list)
    queues_kept: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QueueSeen:
    """One of the agents' queues, as listed."""

    url: str
    arn: str
    heartbeat: float
    topic: str | None


def heartbeat_of(tags: dict[str, str]) -> float | None:
    """The queue's last sign of life (heartbeat, else creation time); None if it is not an agent's queue."""
    if TAG_HOST not in tags:
        return None
    for key in (TAG_HEARTBEAT, TAG_CREATED):
        try:
            return float(tags[key])
        except (KeyError, ValueError):
            continue
    return 0.0  # an agent's queue with no readable time: as old as can be


class Sweeper:
    """Finds and removes orphaned agent queues and dangling subscriptions."""

    def __init__(
        self,
        sqs: Any,
        sns: Any,
        calls: UpstreamCalls,
        *,
        prefix: str,
        region: str,
        account: str,
        clock: Callable[[], float],
    ) -> None:
        self._region = region
        self._account = account
        self._sqs = sqs
        self._sns = sns
        self._calls = calls
        self._prefix = prefix
        self._clock = clock

    async def sweep(self, *, older_than: float, topics: Iterable[str] = (), dry_run: bool = False) -> SweepReport:
        """Remove (unless ``dry_run``) queues silent for ``older_than`` seconds and subscriptions without a queue."""
        report = SweepReport()
        known_topics = list(dict.fromkeys(topics))
        # Subscriptions first (see the module docstring), for the topics named; tagged topics are added below.
        listed_first = {topic: await self._subscriptions(topic) for topic in known_topics}
        subscriptions = dict(listed_first)
        queues, names = await self._queues()
        for topic in dict.fromkeys(q.topic for q in queues if q.topic and q.topic not in subscriptions):
            subscriptions[topic] = await self._subscriptions(topic)
        now = self._clock()
        for queue in queues:
            if now - queue.heartbeat < older_than:
                report.queues_kept.append(queue.url)
                continue
            for subs in subscriptions.values():
                for sub in subs:
                    if sub["Endpoint"] == queue.arn:
                        await self._unsubscribe(sub["SubscriptionArn"], dry_run, report)
            if not dry_run:
                await self._quietly("DeleteQueue", self._sqs.delete_queue, SQS, QueueUrl=queue.url)
            report.queues_removed.append(queue.url)
            log.info("sweep_queue", queue=queue.url, silent_for=round(now - queue.heartbeat), dry_run=dry_run)
        for subs in listed_first.values():  # only these were listed before the queues
            for sub in subs:
                endpoint = sub["Endpoint"]
                parts = endpoint.split(":")
                if len(parts) != 6 or parts[2] != "sqs" or parts[3:5] != [self._region, self._account]:
                    continue  # not a queue, or another region's or account's: not ours to judge
                if parts[5] in names or not parts[5].startswith(self._prefix):
                    continue  # the queue exists (an agent's or anyone's), or is not an agent's by name
                if sub["SubscriptionArn"] in report.subscriptions_removed:
                    continue
                log.info("sweep_subscription", subscription=sub["SubscriptionArn"], endpoint=endpoint, dry_run=dry_run)
                await self._unsubscribe(sub["SubscriptionArn"], dry_run, report)
        return report

    async def _unsubscribe(self, arn: str, dry_run: bool, report: SweepReport) -> None:
        if arn in report.subscriptions_removed or arn in ("PendingConfirmation", "Deleted"):
            return
        if not dry_run:
            await self._quietly("Unsubscribe", self._sns.unsubscribe, SNS, SubscriptionArn=arn)
        report.subscriptions_removed.append(arn)

    async def _subscriptions(self, topic: str) -> list[dict[str, str]]:
        """The topic's SQS subscriptions (every page)."""
        found: list[dict[str, str]] = []
        async for page in self._calls.pages(
            "ListSubscriptionsByTopic", self._sns.list_subscriptions_by_topic, service=SNS, TopicArn=topic
        ):
            found.extend(
                {"SubscriptionArn": str(sub["SubscriptionArn"]), "Endpoint": str(sub.get("Endpoint", ""))}
                for sub in page.get("Subscriptions", ())
                if sub.get("Protocol") == "sqs"
            )
        return found

    async def _queues(self) -> tuple[list[QueueSeen], set[str]]:
        """The agents' queues under the prefix (every page), with their heartbeat and topic; every name listed."""
        urls: list[str] = []
        async for page in self._calls.pages(
            "ListQueues", self._sqs.list_queues, service=SQS, QueueNamePrefix=self._prefix, MaxResults=1000
        ):
            urls.extend(page.get("QueueUrls", ()))
        seen: list[QueueSeen] = []
        for url in urls:
            try:
                tags = await self._calls.call("ListQueueTags", self._sqs.list_queue_tags, service=SQS, QueueUrl=url)
                beat = heartbeat_of(tags.get("Tags") or {})
                if beat is None:
                    continue  # not an agent's queue: leave it alone whatever its name
                attributes = await self._calls.call(
                    "GetQueueAttributes",
                    self._sqs.get_queue_attributes,
                    service=SQS,
                    QueueUrl=url,
                    AttributeNames=["QueueArn"],
                )
            except UpstreamError as exc:
                if queue_gone(exc):
                    continue  # deleted since it was listed (its own agent stopped)
                raise
            topic = (tags.get("Tags") or {}).get(TAG_TOPIC)
            seen.append(QueueSeen(url, str(attributes["Attributes"]["QueueArn"]), beat, topic))
        return seen, {url.rstrip("/").rsplit("/", 1)[-1] for url in urls}

    async def _quietly(self, operation: str, fn: Callable[..., Any], service: str, **kwargs: Any) -> None:
        try:
            await self._calls.call(operation, fn, service=service, **kwargs)
        except UpstreamError as exc:
            if not queue_gone(exc):  # already gone is what we wanted
                raise
