"""Audit trail: one JSON line per read attempt, per observed rotation, per upstream failure burst.

Answers "who read which version of what, when, and when did it change".
Records go to ``[audit] path`` (opened append-only, mode 0600, reopened on
SIGHUP so logrotate can move the file) or to stdout with ``path = "-"``; each
line is flushed as it is written. A record never holds a secret value or a
token: only names, ARNs, version ids and stages.

``secrets-agent audit FILE`` summarises a file (:func:`summarize`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from agent.core.log import get_logger
from agent.core.types import AWSCURRENT, SecretValue, Selector

log = get_logger("agent.access.audit")


def served(value: SecretValue, selector: Selector) -> dict[str, Any]:
    """The part of a read record that says what was served (never the value itself)."""
    stage = selector.version_stage or (None if selector.version_id else AWSCURRENT)
    return {"name": value.name, "arn": value.arn, "version_id": value.version_id, "version_stage": stage}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Writes audit records; a no-op when no path is configured."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fh: TextIO | None = None
        self._burst: dict[str, Any] | None = None
        self._open()

    @property
    def enabled(self) -> bool:
        """True when records are written somewhere."""
        return self._fh is not None

    def _open(self) -> None:
        if self.path is None:
            return
        if self.path == "-":
            self._fh = sys.stdout
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # also tightens a file that existed with looser bits
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def reopen(self) -> None:
        """Close and reopen the file (SIGHUP, after logrotate moved it)."""
        if self._fh is not None and self._fh is not sys.stdout:
            with contextlib.suppress(OSError):
                self._fh.close()
        self._fh = None
        self._open()
        log.info("audit_reopened", path=self.path)

    def close(self) -> None:
        """Close the file (shutdown)."""
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record, stamped with the time, and flush it."""
        if self._fh is None:
            return
        line = json.dumps({"time": _now(), **record}, separators=(",", ":"), default=str)
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk must not take reads down with it
            log.error("audit_write_failed", reason=exc.strerror)

    def rotation(self, *, name: str, arn: str, old_version: str | None, new_version: str, how: str) -> None:
        """Record an observed AWSCURRENT move."""
        self.write(
            {
                "type": "rotation",
                "name": name,
                "arn": arn,
                "old_version": old_version,
                "new_version": new_version,
                "how": how,
            }
        )

    def upstream(self, operation: str, outcome: str, transient: bool) -> None:
        """Track upstream health; one record when a failure burst starts and one when it ends."""
        if transient:
            if self._burst is None:
                self._burst = {"started": time.monotonic(), "failures": 0, "first_error": outcome}
                self.write({"type": "upstream_failure_started", "operation": operation, "error": outcome})
            self._burst["failures"] += 1
        elif outcome == "ok" and self._burst is not None:
            burst, self._burst = self._burst, None
            self.write(
                {
                    "type": "upstream_failure_ended",
                    "failures": burst["failures"],
                    "first_error": burst["first_error"],
                    "seconds": round(time.monotonic() - burst["started"], 3),
                }
            )


def summarize(lines: Iterable[str]) -> str:
    """Reads per client per secret, denials and rotations, as text tables."""
    reads: Counter[tuple[str, str, str]] = Counter()
    rotations: list[dict[str, Any]] = []
    bursts = 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        kind = record.get("type")
        if kind == "read":
            secret = record.get("name") or record.get("secret_id") or "?"
            reads[(record.get("client") or "-", secret, record.get("decision", "?"))] += 1
        elif kind == "rotation":
            rotations.append(record)
        elif kind == "upstream_failure_started":
            bursts += 1
    out = ["reads (client, secret, decision, count):"]
    for (client, secret, decision), count in sorted(reads.items()):
        out.append(f"  {client:<20} {secret:<40} {decision:<6} {count}")
    denials = sum(count for (_c, _s, decision), count in reads.items() if decision == "deny")
    out.append(f"denials: {denials}")
    out.append("rotations (time, secret, old -> new, how):")
    for record in rotations:
        out.append(
            f"  {record.get('time')} {record.get('name')} {record.get('old_version')} -> "
            f"{record.get('new_version')} ({record.get('how')})"
        )
    out.append(f"upstream failure bursts: {bursts}")
    return "\n".join(out)
