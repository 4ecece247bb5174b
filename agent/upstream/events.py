"""Change events: long-poll an SQS queue fed by EventBridge and refresh named secrets at once.

An EventBridge rule on ``source: aws.secretsmanager`` delivers CloudTrail-based
events to the queue. For ``PutSecretValue``, ``UpdateSecret``,
``UpdateSecretVersionStage``, ``RotateSecret``, ``RotationSucceeded`` and
``DeleteSecret`` naming a cached secret (by ARN, partial ARN or name; the ARN
key may be spelt ``arn``, ``aRN`` or ``ARN``) the secret is refreshed at once and
the message deleted. Unrelated messages (other sources or events, secrets this
agent does not cache, unparseable bodies) are left alone: the queue may be shared,
and a redrive policy should catch poison messages. A message whose refresh
failed transiently is not deleted, so SQS redelivers it.

Each long poll (up to 20 s) runs in a short-lived *daemon* thread, not the
shared pool: a pool worker blocked in a poll would hold interpreter exit for up
to 20 s after SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.core.errors import UpstreamError
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.upstream.secretsmanager import translate
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
MAX_MESSAGES = 10
T = TypeVar("T")
SecretRefresher = Callable[[str], Awaitable[bool]]


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
    if not isinstance(detail, dict) or detail.get("eventName") not in RELEVANT_EVENTS:
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


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[], None]) -> None:
        if not future.done():
            setter()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc  # `exc` is unbound after the except block; the callback runs later
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
                loop.call_soon_threadsafe(deliver, lambda: future.set_exception(error))
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, lambda: future.set_result(result))

    threading.Thread(target=target, name="sqs-poll", daemon=True).start()
    return future


class EventListener:
    """Long-polls one SQS queue and refreshes secrets named by its events."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        refresh: SecretRefresher,
        *,
        wait_seconds: int = 20,
        metrics: Metrics | None = None,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._refresh = refresh
        self._wait = wait_seconds
        self._metrics = metrics

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.event_messages.labels(outcome).inc()

    async def run(self) -> None:
        """Poll until cancelled; back off (full jitter) while the queue cannot be read."""
        backoff = Backoff(base=1.0, cap=60.0)
        log.info("events_listening", queue=self._queue_url)
        while True:
            try:
                reply = await _in_daemon_thread(
                    lambda: self._sqs.receive_message(
                        QueueUrl=self._queue_url,
                        MaxNumberOfMessages=MAX_MESSAGES,
                        WaitTimeSeconds=self._wait,
                    )
                )
            except Exception as exc:  # botocore errors are translated for the log line
                error = translate(exc)
                delay = backoff.next_delay()
                log.warning("events_receive_failed", error=error.code, reason=error.message, retry_in=round(delay, 1))
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
            return outcome
        event_name, refs = parsed
        handled = False
        try:
            for ref in refs:
                if await self._refresh(ref):
                    handled = True
                    break
        except UpstreamError as exc:
            log.warning("event_refresh_failed", event_name=event_name, error=exc.code)
            self._count("failed")
            return "failed"
        if not handled:
            self._count("ignored")
            return "ignored"
        try:
            receipt = message["ReceiptHandle"]
            await _in_daemon_thread(lambda: self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt))
        except Exception as exc:  # the refresh happened; a redelivery is harmless
            log.warning("event_delete_failed", error=translate(exc).code)
        log.info("event_handled", event_name=event_name)
        self._count("handled")
        return "handled"


def _is_json(body: Any) -> bool:
    try:
        json.loads(str(body))
    except ValueError:
        return False
    return True
