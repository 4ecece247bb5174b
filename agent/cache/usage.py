"""Who reads what: per secret and client, reads and denials over time, and readers of replaced versions.

Answers the operator's question after a rotation: "which apps still use the
old credential?". A read of a version after the change that replaced it was
seen (:meth:`~agent.cache.history.RotationHistory.superseded_at`) makes its
client an *old version reader* of that version.

Counts are kept in per-hour buckets for 30 days (the page's longest timeline)
and per-minute buckets for the last hour, sparse (an idle hour costs nothing),
bounded in clients per secret and in secrets. Recording a read is a few dict
updates on the event loop: it runs on every read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.cache.history import RotationHistory

HOUR = 3600
MINUTE = 60
KEEP_SECONDS = 30 * 86_400  # the page's longest window
MAX_CLIENTS_PER_SECRET = 100
MAX_SECRETS = 10_000
MAX_OLD_VERSIONS = 20  # (client, version) pairs per secret


@dataclass
class ClientUsage:
    """One client's reads of one secret."""

    hours: dict[int, list[int]] = field(default_factory=dict)  # hour index → [reads, denied]
    minutes: dict[int, int] = field(default_factory=dict)  # minute index → reads (last hour only)


@dataclass(frozen=True)
class ClientReads:
    """A client's reads of one secret as reported."""

    client: str
    last_hour: int
    last_day: int
    denied: int  # refusals over the last day
    hourly: list[tuple[int, int]]  # (hour start, epoch seconds; reads + denials), oldest first


@dataclass(frozen=True)
class OldReader:
    """A client that read a version after the change replacing it was seen."""

    client: str
    version_id: str
    reads: int
    last_read: float


class ReadUsage:
    """Per-secret, per-client read accounting (by canonical ARN)."""

    def __init__(self, history: RotationHistory, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._history = history
        self._wall = wall_clock
        self._usage: OrderedDict[str, OrderedDict[str, ClientUsage]] = OrderedDict()
        self._old: dict[str, OrderedDict[tuple[str, str], list[float]]] = {}

    def note(self, arn: str, client: str, version_id: str | None, *, allowed: bool) -> None:
        """Count one read (or refusal) of ``arn`` by ``client``; ``version_id``: what was served."""
        now = self._wall()
        usage = self._client(arn, client)
        hour = int(now // HOUR)
        bucket = usage.hours.get(hour)
        if bucket is None:
            bucket = usage.hours[hour] = [0, 0]
            _prune(usage.hours, hour - KEEP_SECONDS // HOUR)
        if allowed:
            bucket[0] += 1
            minute = int(now // MINUTE)
            if minute not in usage.minutes:
                _prune(usage.minutes, minute - HOUR // MINUTE)
                usage.minutes[minute] = 0
            usage.minutes[minute] += 1
        else:
            bucket[1] += 1
        if allowed and version_id is not None:
            replaced = self._history.superseded_at(arn, version_id)
            if replaced is not None and now >= replaced:
                self._note_old(arn, client, version_id, now)

    def _client(self, arn: str, client: str) -> ClientUsage:
        clients = self._usage.get(arn)
        if clients is None:
            clients = self._usage[arn] = OrderedDict()
            while len(self._usage) > MAX_SECRETS:
                gone, _ = self._usage.popitem(last=False)
                self._old.pop(gone, None)
        usage = clients.get(client)
        if usage is None:
            usage = clients[client] = ClientUsage()
            while len(clients) > MAX_CLIENTS_PER_SECRET:
                clients.popitem(last=False)
        clients.move_to_end(client)
        return usage

    def _note_old(self, arn: str, client: str, version_id: str, now: float) -> None:
        old = self._old.setdefault(arn, OrderedDict())
        record = old.get((client, version_id))
        if record is None:
            record = old[(client, version_id)] = [0, now]
            while len(old) > MAX_OLD_VERSIONS:
                old.popitem(last=False)
        record[0] += 1
        record[1] = now
        old.move_to_end((client, version_id))

    def reads(self, arn: str) -> list[ClientReads]:
        """Each client's reads of ``arn``, busiest over the last day first."""
        now = self._wall()
        hour_now, minute_now = int(now // HOUR), int(now // MINUTE)
        report = []
        for client, usage in self._usage.get(arn, {}).items():
            day = [(hour, counts) for hour, counts in usage.hours.items() if hour > hour_now - 24]
            report.append(
                ClientReads(
                    client=client,
                    last_hour=sum(n for minute, n in usage.minutes.items() if minute > minute_now - 60),
                    last_day=sum(counts[0] for _hour, counts in day),
                    denied=sum(counts[1] for _hour, counts in day),
                    hourly=sorted(
                        (hour * HOUR, counts[0] + counts[1])
                        for hour, counts in usage.hours.items()
                        if hour > hour_now - KEEP_SECONDS // HOUR
                    ),
                )
            )
        return sorted(report, key=lambda reads: (-reads.last_day, reads.client))

    def old_version_readers(self, arn: str, current_version: str | None) -> list[OldReader]:
        """Clients that read a replaced version after its replacement was seen (never the current one)."""
        return [
            OldReader(client, version_id, int(record[0]), record[1])
            for (client, version_id), record in reversed(self._old.get(arn, {}).items())
            if version_id != current_version
        ]


def _prune(buckets: dict[int, Any], oldest: int) -> None:
    """Drop buckets older than ``oldest`` (done when a new bucket opens, so at most once a minute)."""
    for index in [index for index in buckets if index < oldest]:
        del buckets[index]
