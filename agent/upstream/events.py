"""Change events: long-poll an SQS queue fed by EventBridge and refresh named secrets at once.

An EventBridge rule on ``source: aws.secretsmanager`` delivers CloudTrail-based
events to the queue. For ``PutSecretValue``, ``UpdateSecret``,
``UpdateSecretVersionStage``, ``RotateSecret``, ``RotationSucceeded`` and
``DeleteSecret`` naming a cached secret (by ARN, partial ARN or name; the ARN
key may be spelt ``arn``, ``aRN`` or ``ARN``) the secret is refreshed at once and
the message deleted. ``RotationFailed`` and ``RotationAbandoned`` mark the
secret's rotation health ``failed`` (and refresh it too). Unrelated messages (other sources or events, secrets this
agent does not cache, unparseable bodies) are left alone: the queue may be shared,
and a redrive policy should catch poison messages. On the agent's own queue
(SNS fan-out, :mod:`agent.upstream.fanout`) they are deleted instead. A message whose refresh
failed transiently is not deleted, so SQS redelivers it.

SQS calls go through the upstream pool like every other AWS call (counted in
``secrets_agent_upstream_calls_total``); its workers are daemon threads, so a
long poll (up to 20 s) in flight at SIGTERM does not hold the process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from agent.core.errors import SecretNotFound, UpstreamError
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.upstream.calls import UpstreamCalls
from agent.upstream.throttle import Backoff

log = get_logger("agent.upstream.events")

RELEVANT_EVENTS = frozenset(
    {
        "PutSecretValue",
        "UpdateSecret",
        "UpdateSecretVersionStage",
        "RotateSecret",
        "RotationSucceeded",
        "DeleteSecret",
    }
)
# A rotation that did not finish: the secret's rotation health becomes "failed" until a new AWSCURRENT.
ROTATION_FAILURES = frozenset({"RotationFailed", "RotationAbandoned"})
MAX_MESSAGES = 10  # ReceiveMessage's maximum
RECEIVE_BACKOFF_CAP_SECONDS = 60.0
# SQS's codes for a queue that does not exist (deleted: by sweep-queues, say), and SNS's for a subscription.
QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NotFound"})
# (secret reference, event name) → True when the agent caches that secret (and acted on it).
SecretRefresher = Callable[[str, str], Awaitable[bool]]


def queue_gone(exc: UpstreamError) -> bool:
    """True when a failed SQS or SNS call says what it named no longer exists (the queue, or its subscription).

    The one test for "deleted under us": the listener of the agent's own queue
    ends on it (:meth:`EventListener.run`, so :mod:`agent.upstream.fanout` makes
    a new queue) and ``sweep-queues`` skips what vanished since it was listed.
    """
    return exc.code in QUEUE_GONE_CODES or isinstance(exc, SecretNotFound)


def parse_event(body: str) -> tuple[str, list[str]] | None:
    """``(eventName, secret references)`` of a Secrets Manager event, else None.

    Accepts the EventBridge event itself or one wrapped in an SNS notification.
    """
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
            data = json.loads(data["Message"])
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("source") != "aws.secretsmanager":
        return None
    detail = data.get("detail")
    if not isinstance(detail, dict) or detail.get("eventName") not in RELEVANT_EVENTS | ROTATION_FAILURES:
        return None
    refs: list[str] = []
    for section, keys in (
        ("responseElements", ("arn", "aRN", "ARN", "name")),
        ("requestParameters", ("secretId", "name")),
        ("additionalEventData", ("SecretId", "secretId")),
    ):
        block = detail.get(section)
        if isinstance(block, dict):
            refs.extend(str(block[key]) for key in keys if isinstance(block.get(key), str))
    for resource in data.get("resources") or ():
        if isinstance(resource, str):
            refs.append(resource)
        elif isinstance(resource, dict) and isinstance(resource.get("ARN"), str):
            refs.append(resource["ARN"])
    return str(detail["eventName"]), list(dict.fromkeys(refs))


class EventListener:
    """Long-polls one SQS queue and refreshes secrets named by its events."""

    def __init__(
        self,
        sqs: Any,
        calls: UpstreamCalls,
        queue_url: str,
        refresh: SecretRefresher,
        *,
        metrics: Metrics,
        wait_seconds: int,
        owned: bool = False,
    ) -> None:
        self._sqs = sqs
        # The agent's own queue (SNS fan-out): nobody else wants what it ignores, so those are deleted too.
        self._owned = owned
        self._calls = calls
        self._queue_url = queue_url
        self._refresh = refresh
        self._wait = wait_seconds
        self._metrics = metrics

    def _count(self, outcome: str) -> None:
        self._metrics.event_messages.labels(outcome).inc()

    async def run(self) -> None:
        """Poll until cancelled; back off (full jitter) while the queue cannot be read.

        The agent's own queue (``owned``) found gone ends the run, so its owner
        (:meth:`~agent.upstream.fanout.FanoutQueue.run`) can make a new one.
        """
        backoff = Backoff(base=1.0, cap=RECEIVE_BACKOFF_CAP_SECONDS)
        log.info("events_listening", queue=self._queue_url)
        while True:
            try:
                reply = await self._calls.call(
                    "ReceiveMessage",
                    self._sqs.receive_message,
                    service="SQS",
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=MAX_MESSAGES,
                    WaitTimeSeconds=self._wait,
                )
            except UpstreamError as exc:
                if self._owned and queue_gone(exc):
                    log.warning("events_queue_gone", queue=self._queue_url, error=exc.code)
                    return
                delay = backoff.next_delay()
                log.warning("events_receive_failed", error=exc.code, reason=exc.message, retry_in=round(delay, 1))
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            for message in reply.get("Messages", ()):
                try:
                    await self.handle(message)
                except Exception as exc:  # one bad message must not stop the listener
                    log.exception("event_handling_failed", error=type(exc).__name__)
                    self._count("failed")

    async def handle(self, message: dict[str, Any]) -> str:
        """Act on one message; returns the outcome (handled, ignored, malformed, failed)."""
        parsed = parse_event(str(message.get("Body", "")))
        if parsed is None:
            outcome = "malformed" if not _is_json(message.get("Body")) else "ignored"
            self._count(outcome)
            if self._owned:
                await self._delete(message)
            return outcome
        event_name, refs = parsed
        handled = False
        try:
            for ref in refs:
                if await self._refresh(ref, event_name):
                    handled = True
                    break
        except UpstreamError as exc:
            log.warning("event_refresh_failed", event_name=event_name, error=exc.code)
            self._count("failed")
            return "failed"
        if not handled:
            self._count("ignored")
            if self._owned:
                await self._delete(message)
            return "ignored"
        await self._delete(message)
        log.info("event_handled", event_name=event_name)
        self._count("handled")
        return "handled"

    async def _delete(self, message: dict[str, Any]) -> None:
        try:
            await self._calls.call(
                "DeleteMessage",
                self._sqs.delete_message,
                service="SQS",
                QueueUrl=self._queue_url,
                ReceiptHandle=message["ReceiptHandle"],
            )
        except (UpstreamError, KeyError) as exc:  # a redelivery is harmless
            log.warning("event_delete_failed", error=getattr(exc, "code", type(exc).__name__))


def _is_json(body: Any) -> bool:
    try:
        json.loads(str(body))
    except ValueError:
        return False
    return True
