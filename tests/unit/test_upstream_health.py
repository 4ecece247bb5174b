"""Upstream failure bursts: decided once by UpstreamHealth, written down by the audit trail it tells."""

from __future__ import annotations

import json
from pathlib import Path

from agent.access.audit import AuditLog
from agent.core.metrics import Metrics
from agent.upstream.health import FailureBurst, UpstreamHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_starts_on_a_transient_failure_and_ends_on_a_success() -> None:
    """The listener hears a burst once when it starts and once when a success ends it, with its count and length."""
    clock = Clock()
    told: list[FailureBurst] = []
    health = UpstreamHealth(lambda: 1000.0, clock=clock, on_burst=told.append)
    health.note("DescribeSecret", "ok", False)
    assert told == [] and health.healthy
    health.note("GetSecretValue", "ServiceUnavailable", True)
    clock.now = 101.0
    health.note("DescribeSecret", "ThrottlingException", True)
    assert told == [FailureBurst("GetSecretValue", "ServiceUnavailable", started=100.0)]
    assert not health.healthy and health.failure_burst == 2 and health.last_error == "ThrottlingException"
    clock.now = 102.5
    health.note("GetSecretValue", "ok", False)
    assert told[1] == FailureBurst("GetSecretValue", "ServiceUnavailable", started=100.0, failures=2, ended=102.5)
    assert told[1].seconds == 2.5
    assert health.healthy and health.failure_burst == 0 and health.last_success == 1000.0


def test_a_refusal_neither_starts_nor_ends_a_burst() -> None:
    """A non-transient error (a refusal, a missing secret) is the last error but no burst, and does not end one."""
    told: list[FailureBurst] = []
    health = UpstreamHealth(clock=Clock(), on_burst=told.append)
    health.note("GetSecretValue", "ResourceNotFoundException", False)
    assert told == [] and health.healthy and health.last_error == "ResourceNotFoundException"
    health.note("GetSecretValue", "InternalServiceError", True)
    health.note("GetSecretValue", "AccessDeniedException", False)
    assert len(told) == 1 and health.failure_burst == 1 and health.last_failure is not None


def test_audit_records_a_burst_start_and_end(tmp_path: Path) -> None:
    """The audit trail, told by UpstreamHealth, writes upstream_failure_started then upstream_failure_ended."""
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), metrics=Metrics())
    clock = Clock()
    health = UpstreamHealth(clock=clock, on_burst=audit.upstream_burst)
    try:
        health.note("GetSecretValue", "ServiceUnavailable", True)
        health.note("DescribeSecret", "InternalServiceError", True)
        clock.now = 100.25
        health.note("DescribeSecret", "ok", False)
        health.note("DescribeSecret", "ok", False)
    finally:
        audit.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "time"} for r in records] == [
        {"type": "upstream_failure_started", "operation": "GetSecretValue", "error": "ServiceUnavailable"},
        {"type": "upstream_failure_ended", "failures": 2, "first_error": "ServiceUnavailable", "seconds": 0.25},
    ]
