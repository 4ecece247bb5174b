"""Secrets Manager events as EventBridge delivers them, and waiting for the agent to serve a new value."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.support.agent import REGION, AgentHandle
from tests.support.waiting import eventually


async def wait_for_value(agent: AgentHandle, path: str, expected: str, timeout: float) -> float:
    """Poll the agent until ``path`` returns ``expected``; return the seconds it took."""
    started = time.monotonic()
    last: list[str] = []

    async def served() -> bool:
        reply = await agent.get(path)
        assert reply.status == 200, reply.text
        last[:] = [reply.text]
        return reply.text == expected

    await eventually(served, timeout=timeout, interval=0.1, message=lambda: f"{path} to become {expected!r} ({last})")
    return time.monotonic() - started


def _event(detail_type: str, detail: dict[str, Any]) -> str:
    """An EventBridge event from Secrets Manager, as SQS (or SNS raw delivery) hands it over."""
    return json.dumps(
        {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": detail_type,
            "source": "aws.secretsmanager",
            "account": "123456789012",
            "time": "2026-11-29T12:00:00Z",
            "region": REGION,
            "resources": [],
            "detail": {"eventSource": "secretsmanager.amazonaws.com", **detail},
        }
    )


def eventbridge_message(event_name: str, arn: str, *, arn_key: str = "aRN", secret_id: str | None = None) -> str:
    """An 'AWS API Call via CloudTrail' event (PutSecretValue, UpdateSecretVersionStage, ...)."""
    return _event(
        "AWS API Call via CloudTrail",
        {
            "eventName": event_name,
            "requestParameters": {"secretId": secret_id or arn},
            "responseElements": {arn_key: arn},
        },
    )


def service_event(event_name: str, arn: str) -> str:
    """An 'AWS Service Event via CloudTrail' (RotationFailed, RotationAbandoned, ...): the id in additionalEventData."""
    return _event(
        "AWS Service Event via CloudTrail", {"eventName": event_name, "additionalEventData": {"SecretId": arn}}
    )
