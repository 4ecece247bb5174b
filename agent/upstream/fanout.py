"""SNS fan-out: each agent's own SQS queue, subscribed to one topic a whole fleet shares.

With ``events.sns_topic_arn`` one EventBridge rule sends Secrets Manager's
CloudTrail events to one SNS topic, and every agent brings its own queue:

1. **Create** a queue named ``<prefix><host>-<8 hex>`` (SQS's 80-character
   alphabet; the random suffix keeps two agents on one host apart), with a
   short message retention (:data:`RETENTION_SECONDS`: an event older than a
   poll interval is worth nothing) and tags saying who made it and when
   (:data:`TAG_HOST`, :data:`TAG_CREATED`, :data:`TAG_HEARTBEAT`, :data:`TAG_TOPIC`).
2. **Allow only the topic**: a queue policy lets ``sns.amazonaws.com`` send,
   on condition ``aws:SourceArn`` equals the topic's ARN.
3. **Subscribe** with ``RawMessageDelivery`` (the body is the EventBridge
   event itself, which :func:`agent.upstream.events.parse_event` reads) and a
   filter policy on the message body (:func:`build_filter`): only events whose
   ``detail.requestParameters.secretId`` names a secret this agent caches are
   delivered, so a fleet of ten thousand agents does not receive ten thousand
   times every rotation in the account.
4. **Keep the filter current**: every :data:`FILTER_CHECK_SECONDS` the cached
   secrets are compared with the applied filter; a change (a secret cached on
   first read, say) is applied in one ``SetSubscriptionAttributes`` call, so a
   burst of new secrets costs one call, not one each. Past SNS's limits (150
   combinations, 256 KB; :data:`MAX_COMBINATIONS`) or if SNS refuses the
   policy (a limit it counts differently), the filter becomes "every Secrets
   Manager event" (:data:`NO_FILTER`) and a log line (``sns_filter_off``) says
   why: the agent still refreshes only what it caches, it just receives more.
   If SNS refuses any policy at Subscribe (its 200-filter-policies-per-topic
   default quota), the agent subscribes without one and stays so until restarted.
5. **Heartbeat**: every :data:`HEARTBEAT_SECONDS` the queue's
   :data:`TAG_HEARTBEAT` tag is set to the current time. A SIGKILL leaves a
   queue and a subscription behind; ``secrets-agent sweep-queues``
   (:mod:`agent.upstream.sweep`) removes queues whose heartbeat is older than
   a threshold, and subscriptions whose queue is gone.
   A running agent whose queue is deleted anyway (a sweep while its
   heartbeats failed) unsubscribes from it and makes a new one (:meth:`FanoutQueue.run`).
6. **Delete** on shutdown: unsubscribe, then delete the queue.

Events that carry the secret only under ``additionalEventData`` (the
``RotationSucceeded``, ``RotationFailed`` and ``RotationAbandoned`` service
events) do not pass the filter: an ``$or`` of the two keys would, but moto
does not implement ``$or`` on message bodies, so nothing here could test it.
A rotation still reaches the agent through the API calls that make it
(``PutSecretValue``, ``UpdateSecretVersionStage``), which carry
``requestParameters.secretId``; a failed one is seen in the secret's metadata
(the rotation watch) instead of at once.

Every call goes through :class:`~agent.upstream.calls.UpstreamCalls` (pool,
metrics, translated errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.core.errors import UpstreamError, UpstreamRejected
from agent.core.log import get_logger
from agent.core.types import partial_arn
from agent.upstream.calls import UpstreamCalls
from agent.upstream.throttle import Backoff

log = get_logger("agent.upstream.fanout")

SQS = "SQS"
SNS = "SNS"
QUEUE_NAME_MAX = 80  # SQS: 1..80 of A-Z a-z 0-9 - _
SUFFIX_BYTES = 4  # 8 hex characters
RETENTION_SECONDS = 300  # SQS's minimum is 60
HEARTBEAT_SECONDS = 300
FILTER_CHECK_SECONDS = 2.0
SETUP_BACKOFF_CAP_SECONDS = 60.0
TEARDOWN_SECONDS = 5.0
# SNS filter policy limits: "the total combination of values must not exceed 150", each array's values counted
# once per level of nesting of its key (AWS's documented example, and moto's check), and 256 KB of JSON.
MAX_COMBINATIONS = 150
MAX_POLICY_BYTES = 256 * 1024
FILTER_PATH = ("detail", "requestParameters", "secretId")
# Matches no secret: Secrets Manager names use only letters, digits and /_+=.@- (no spaces or parentheses).
NOTHING_CACHED = "(nothing cached)"
# "No filter" is still a body policy (every Secrets Manager event, which is all the rule sends), so the
# subscription keeps its MessageBody scope and can go back to a filter when the cache shrinks.
NO_FILTER = '{"source":["aws.secretsmanager"]}'

TAG_HOST = "secrets-agent:host"
TAG_CREATED = "secrets-agent:created-at"
TAG_HEARTBEAT = "secrets-agent:heartbeat"
TAG_TOPIC = "secrets-agent:topic"

CachedSecrets = Callable[[], Iterable[tuple[str, str | None]]]  # (ARN, name) of each cached secret
Listen = Callable[[str], Awaitable[None]]


def queue_name(prefix: str, host: str, suffix: str) -> str:
    """``<prefix><host>-<suffix>`` within SQS's name rules: other characters become ``-``, the host is cut to fit."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-_") or "host"
    room = QUEUE_NAME_MAX - len(prefix) - len(suffix) - 1
    return f"{prefix}{cleaned[:room].rstrip('-_') or 'h'}-{suffix}"


def new_queue_name(prefix: str) -> str:
    """A fresh queue name for this host."""
    return queue_name(prefix, socket.gethostname(), secrets.token_hex(SUFFIX_BYTES))


def queue_policy(queue_arn: str, topic_arn: str) -> str:
    """The queue policy: only ``topic_arn``, through SNS, may send to the queue."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OnlyTheTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )


@dataclass(frozen=True)
class Filter:
    """The filter policy to apply (``"{}"``: none) and, when there is none, why."""

    policy: str
    values: int
    reason: str | None = None

    @property
    def filtered(self) -> bool:
        """True when SNS filters for this agent."""
        return self.policy != NO_FILTER


def filter_values(cached: Iterable[tuple[str, str | None]]) -> list[Any]:
    """How events may name each cached secret: its name exactly, and any ARN starting with its partial ARN.

    ``requestParameters.secretId`` is whatever the caller passed: a name, a
    partial ARN or the full ARN; one prefix rule covers both ARN forms.
    """
    names: set[str] = set()
    prefixes: set[str] = set()
    for arn, name in cached:
        prefixes.add(partial_arn(arn))
        if name:
            names.add(name)
    return [*sorted(names), *({"prefix": prefix} for prefix in sorted(prefixes))]


def complexity(values: int) -> int:
    """SNS's "total combination" of a policy with one array of ``values`` at :data:`FILTER_PATH`."""
    return values * len(FILTER_PATH)


def build_filter(cached: Iterable[tuple[str, str | None]]) -> Filter:
    """The filter policy for these cached secrets, or none (with the reason) past SNS's limits."""
    values = filter_values(cached) or [NOTHING_CACHED]
    combinations = complexity(len(values))
    if combinations > MAX_COMBINATIONS:
        reason = f"{len(values)} values make {combinations} combinations, over SNS's {MAX_COMBINATIONS}"
        return Filter(NO_FILTER, len(values), reason)
    node: Any = values
    for key in reversed(FILTER_PATH):
        node = {key: node}
    policy = json.dumps(node, separators=(",", ":"))
    if len(policy.encode()) > MAX_POLICY_BYTES:
        return Filter(NO_FILTER, len(values), f"the policy is {len(policy.encode())} bytes, over SNS's 256 KB")
    return Filter(policy, len(values))


class FanoutQueue:
    """The agent's own queue on an SNS topic: made at start, kept filtered and alive, deleted at stop."""

    def __init__(
        self,
        sqs: Any,
        sns: Any,
        calls: UpstreamCalls,
        topic_arn: str,
        cached: CachedSecrets,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        self._sqs = sqs
        self._sns = sns
        self._calls = calls
        self.topic_arn = topic_arn
        self._cached = cached
        self._clock = clock
        self._prefix = prefix
        self._fixed_name = name is not None
        self.name = name or new_queue_name(prefix)
        self.queue_url: str | None = None
        self.queue_arn: str | None = None
        self.subscription_arn: str | None = None
        self.applied: Filter | None = None
        self._refused: str | None = None  # a policy SNS refused: not sent again until the cache changes
        self._bare = False  # subscribed with no policy at all (SNS refused one): stays so, scope cannot change

    # ------------------------------------------------------------------ start

    async def open(self) -> str:
        """Create, protect and subscribe the queue; returns its URL. A queue left half-made is deleted."""
        self._bare = False
        now = str(int(self._clock()))
        reply = await self._made(
            "CreateQueue",
            self._sqs.create_queue,
            SQS,
            lambda reply: setattr(self, "queue_url", str(reply["QueueUrl"])),
            QueueName=self.name,
            Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)},
            tags={
                TAG_HOST: socket.gethostname()[:256],
                TAG_CREATED: now,
                TAG_HEARTBEAT: now,
                TAG_TOPIC: self.topic_arn,
            },
        )
        self.queue_url = str(reply["QueueUrl"])
        try:
            attributes = await self._calls.call(
                "GetQueueAttributes",
                self._sqs.get_queue_attributes,
                service=SQS,
                QueueUrl=self.queue_url,
                AttributeNames=["QueueArn"],
            )
            self.queue_arn = str(attributes["Attributes"]["QueueArn"])
            await self._calls.call(
                "SetQueueAttributes",
                self._sqs.set_queue_attributes,
                service=SQS,
                QueueUrl=self.queue_url,
                Attributes={"Policy": queue_policy(self.queue_arn, self.topic_arn)},
            )
            wanted = build_filter(self._cached())
            try:
                self.subscription_arn = await self._subscribe(wanted)
            except UpstreamRejected as exc:
                if not wanted.filtered:
                    raise
                # SNS refused the filter (its filter-policy quota, say): subscribe without one rather than not at all.
                self._bare = True
                wanted = Filter(NO_FILTER, wanted.values, f"SNS refused the filter policy: {exc.code}")
                self.subscription_arn = await self._subscribe(wanted)
        except BaseException:
            await self.close()
            raise
        self._applied(wanted)
        log.info("sns_subscribed", topic=self.topic_arn, queue=self.name, filter_values=wanted.values)
        return self.queue_url

    async def _subscribe(self, wanted: Filter) -> str:
        attributes = {"RawMessageDelivery": "true"}
        if not self._bare:
            attributes |= {"FilterPolicyScope": "MessageBody", "FilterPolicy": wanted.policy}
        subscribed = await self._made(
            "Subscribe",
            self._sns.subscribe,
            SNS,
            lambda reply: setattr(self, "subscription_arn", str(reply["SubscriptionArn"])),
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=self.queue_arn,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        return str(subscribed["SubscriptionArn"])

    async def _made(
        self, operation: str, fn: Callable[..., Any], service: str, keep: Callable[[Any], None], **kwargs: Any
    ) -> Any:
        """A call that creates something upstream, whose answer reaches ``keep`` even if cancelled meanwhile.

        Cancelled (shutdown during :meth:`open`), it still waits up to :data:`TEARDOWN_SECONDS` for the
        answer, so :meth:`close` knows what was made and deletes it; then the cancellation goes on.
        """
        call = asyncio.ensure_future(self._calls.call(operation, fn, service=service, **kwargs))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            # Failed, or still out after the wait: nothing known to delete (sweep-queues finds it).
            with contextlib.suppress(UpstreamError, TimeoutError, asyncio.CancelledError):
                keep(await asyncio.wait_for(call, TEARDOWN_SECONDS))
            raise

    async def open_with_retries(self) -> str:
        """:meth:`open` until it succeeds, backing off (full jitter) between tries."""
        backoff = Backoff(base=1.0, cap=SETUP_BACKOFF_CAP_SECONDS)
        while True:
            try:
                return await self.open()
            except UpstreamError as exc:
                delay = backoff.next_delay()
                log.warning("sns_subscribe_failed", topic=self.topic_arn, error=exc.code, retry_in=round(delay, 1))
                await asyncio.sleep(delay)
                if not self._fixed_name:
                    self.name = new_queue_name(self._prefix)  # SQS refuses a just-deleted name for 60 s

    # ------------------------------------------------------------------ while running

    async def update_filter(self) -> bool:
        """Apply the filter for what is cached now, if it changed; True when a call was made."""
        if self.subscription_arn is None or self._bare:
            return False
        wanted = build_filter(self._cached())
        if self.applied is not None and wanted.policy == self.applied.policy:
            return False
        if wanted.policy == self._refused:
            return False
        try:
            await self._set_filter(wanted.policy)
        except UpstreamRejected as exc:
            if not wanted.filtered:
                raise
            # SNS refused the policy (its filter-policy quota, a limit it counts differently): go unfiltered.
            self._refused = wanted.policy
            wanted = Filter(NO_FILTER, wanted.values, f"SNS refused the filter policy: {exc.code}")
            if self.applied is None or self.applied.filtered:
                await self._set_filter(NO_FILTER)
        self._applied(wanted)
        return True

    async def _set_filter(self, policy: str) -> None:
        await self._calls.call(
            "SetSubscriptionAttributes",
            self._sns.set_subscription_attributes,
            service=SNS,
            SubscriptionArn=self.subscription_arn,
            AttributeName="FilterPolicy",
            AttributeValue=policy,
        )

    def _applied(self, applied: Filter) -> None:
        before, self.applied = self.applied, applied
        if not applied.filtered and (before is None or before.filtered):
            log.warning("sns_filter_off", queue=self.name, values=applied.values, reason=applied.reason)
        elif applied.filtered and before is not None:
            log.info("sns_filter_updated", queue=self.name, values=applied.values)

    async def heartbeat(self) -> None:
        """Tell ``sweep-queues`` this queue's agent is alive."""
        if self.queue_url is None:
            return
        await self._calls.call(
            "TagQueue",
            self._sqs.tag_queue,
            service=SQS,
            QueueUrl=self.queue_url,
            Tags={TAG_HEARTBEAT: str(int(self._clock()))},
        )

    async def maintain(self) -> None:
        """Until cancelled: keep the filter current (debounced) and the heartbeat fresh; failures are retried."""
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while True:
            await asyncio.sleep(FILTER_CHECK_SECONDS)
            try:
                await self.update_filter()
            except UpstreamError as exc:  # tried again next round
                log.warning("sns_filter_update_failed", queue=self.name, error=exc.code)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_SECONDS  # a failed beat waits for the next one
                try:
                    await self.heartbeat()
                except UpstreamError as exc:
                    log.warning("sns_heartbeat_failed", queue=self.name, error=exc.code)

    async def run(self, listen: Listen) -> None:
        """Open the queue (retrying), then listen on it and maintain it until cancelled.

        ``listen`` returns when the queue is gone (deleted by ``sweep-queues`` while this agent's
        heartbeats failed, say): its subscription is removed and a new queue is made.
        """
        while True:
            url = await self.open_with_retries()
            upkeep = asyncio.create_task(self.maintain(), name="sns-upkeep")
            try:
                await listen(url)
            finally:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
            log.warning("sns_queue_gone", queue=self.name)
            await self.close()  # the subscription to the deleted queue (the queue itself: already gone)
            if not self._fixed_name:
                self.name = new_queue_name(self._prefix)

    # ------------------------------------------------------------------ stop

    async def close(self) -> None:
        """Unsubscribe and delete the queue (each at most :data:`TEARDOWN_SECONDS`); failures are logged, not raised."""
        if self.subscription_arn is not None:
            arn, self.subscription_arn = self.subscription_arn, None
            await self._quietly("Unsubscribe", self._sns.unsubscribe, SNS, SubscriptionArn=arn)
        if self.queue_url is not None:
            url, self.queue_url = self.queue_url, None
            if await self._quietly("DeleteQueue", self._sqs.delete_queue, SQS, QueueUrl=url):
                log.info("sns_queue_deleted", queue=self.name)

    async def _quietly(self, operation: str, fn: Callable[..., Any], service: str, **kwargs: Any) -> bool:
        try:
            await asyncio.wait_for(self._calls.call(operation, fn, service=service, **kwargs), TEARDOWN_SECONDS)
        except (UpstreamError, TimeoutError) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            log.warning("sns_cleanup_failed", operation=operation, queue=self.name, error=code)
            return False
        return True
