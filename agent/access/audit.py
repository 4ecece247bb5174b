"""Audit trail: one JSON line per read attempt, per observed rotation, per upstream failure burst.

Failure bursts are decided by :class:`~agent.upstream.health.UpstreamHealth`;
:meth:`AuditLog.upstream_burst` only writes them down (one record when a burst
starts, one when it ends).

Answers "who read which version of what, when, and when did it change".
Records go to ``[audit] path`` (opened append-only, mode 0600, reopened on
SIGHUP so logrotate can move the file) or to stdout with ``path = "-"``; each
line is written with one unbuffered ``write`` as it is made. A record never
holds a secret value or a token: only names, ARNs, version ids and stages.

The trail cannot be redirected: the file is opened with ``O_NOFOLLOW`` and
must be a regular file, with one link, owned by the agent's effective uid.
At start anything else is a :class:`~agent.core.errors.ConfigError` naming
``audit.path``; on SIGHUP it is a failed reopen.

It fails closed (``[audit] on_failure = "deny"``, the default): a read whose
record cannot be written, or any read while the last reopen failed, is
refused by the observe middleware (:attr:`AuditLog.refuses_reads`). A failed
reopen keeps the old file (records still land there, e.g. in the file
logrotate renamed) and leaves the trail unhealthy (:attr:`AuditLog.problem`:
``/readyz`` and ``secrets_agent_audit_healthy``) until a reopen succeeds. A
failed write is counted and drops the gauge until a write succeeds.

``secrets-agent audit FILE`` summarises a file (:func:`summarize`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent.config.schema import AUDIT_ON_FAILURE
from agent.core.errors import ConfigError
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.core.types import AWSCURRENT, SecretValue, Selector, format_rfc3339, parse_rfc3339
from agent.upstream.health import FailureBurst

log = get_logger("agent.access.audit")

# How much of an audit file's end is read at start to restore rotation history.
RESTORE_MAX_BYTES = 8 * 1024 * 1024


def served(value: SecretValue, selector: Selector) -> dict[str, Any]:
    """The part of a read record that says what was served (never the value itself)."""
    stage = selector.version_stage or (None if selector.version_id else AWSCURRENT)
    return {"name": value.name, "arn": value.arn, "version_id": value.version_id, "version_stage": stage}


def _now() -> str:
    return format_rfc3339(time.time(), millis=True)


# O_NONBLOCK: a FIFO planted at the path must be refused, not wait for a reader.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def open_audit_file(path: str) -> int:
    """Open ``path`` for appending, refusing anything that could redirect the trail; the fd, mode 0600.

    Raises :class:`OSError` (a symlink is ``ELOOP``) or :class:`ValueError` (not
    a regular file with one link owned by this process's effective uid). The
    mode is only tightened once the file is known to be the agent's own.
    """
    fd = os.open(path, _OPEN_FLAGS, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file")
        if info.st_uid != os.geteuid():
            raise ValueError(f"is owned by uid {info.st_uid}, not the agent's uid {os.geteuid()}")
        if info.st_nlink != 1:
            raise ValueError(f"has {info.st_nlink} hard links (expected 1)")
        os.set_blocking(fd, True)
        os.fchmod(fd, 0o600)  # also tightens a file that existed with looser bits
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ELOOP:
            return "is a symbolic link (refused: the audit trail must not be redirected)"
        return exc.strerror or str(exc)
    return str(exc)


class AuditLog:
    """Writes audit records; a no-op when no path is configured."""

    def __init__(
        self,
        path: str | None,
        *,
        metrics: Metrics,
        on_failure: str = "deny",
    ) -> None:
        if on_failure not in AUDIT_ON_FAILURE:
            raise ValueError(f"on_failure must be one of {AUDIT_ON_FAILURE}, got {on_failure!r}")
        self.path = path
        self.on_failure = on_failure
        self._metrics = metrics
        self._fd: int | None = None
        self._stdout = False
        self._reopen_problem: str | None = None
        self._write_problem: str | None = None
        self._torn = False  # the last write stopped mid-line: start the next one on a new line
        for kind in ("write", "reopen"):
            metrics.audit_failures.labels(kind)  # both series exist from the start, at 0
        if path == "-":
            self._stdout = True
        elif path is not None:
            try:
                self._fd = open_audit_file(path)
            except (OSError, ValueError) as exc:
                raise ConfigError([("audit.path", f"{path}: {_reason(exc)}")]) from None
        self._set_health()

    @property
    def enabled(self) -> bool:
        """True when records are written somewhere."""
        return self._stdout or self._fd is not None

    @property
    def problem(self) -> str | None:
        """Why the last reopen failed (``/readyz`` shows it), or None once the path is open."""
        return self._reopen_problem

    @property
    def refuses_reads(self) -> bool:
        """Reads must be refused now: ``on_failure = "deny"`` and the last reopen failed."""
        return self.on_failure == "deny" and self._reopen_problem is not None

    def _set_health(self) -> None:
        # The gauge also drops while writes fail (disk full); readiness follows reopens only.
        self._metrics.audit_healthy.set(0 if self._reopen_problem or self._write_problem else 1)

    def reopen(self) -> None:
        """Open the path anew (SIGHUP, after logrotate moved it); on failure keep the old file.

        A failed reopen is logged, counted and kept as :attr:`problem` (``/readyz``)
        until a later reopen succeeds; with ``on_failure = "deny"`` reads are refused
        meanwhile. It never raises.
        """
        if self.path is None or self._stdout:
            return
        try:
            fd = open_audit_file(self.path)
        except (OSError, ValueError) as exc:
            self._reopen_problem = f"reopen failed: {_reason(exc)}"  # no path: /readyz is public
            self._metrics.audit_failures.labels("reopen").inc()
            log.error("audit_reopen_failed", path=self.path, reason=_reason(exc), on_failure=self.on_failure)
        else:
            old, self._fd = self._fd, fd
            self._torn = False
            if old is not None:
                with contextlib.suppress(OSError):
                    os.close(old)
            self._reopen_problem = None
            log.info("audit_reopened", path=self.path)
        self._set_health()

    def close(self) -> None:
        """Close the file (shutdown)."""
        fd, self._fd = self._fd, None
        self._stdout = False
        if fd is not None:
            os.close(fd)

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record, stamped with the time; False if it could not be written (see :meth:`write_all`)."""
        return self.write_all([record])

    def write_all(self, records: list[dict[str, Any]]) -> bool:
        """Append records (one line each, one time stamp) in one write; False if they could not be written.

        A failure (disk full, file too large) is logged and counted, and marks the
        trail unhealthy until a write succeeds; the caller decides whether to serve.
        """
        if not self.enabled:
            return True
        now = _now()
        line = "".join(json.dumps({"time": now, **r}, separators=(",", ":"), default=str) + "\n" for r in records)
        try:
            if self._stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                self._append(line)
        except OSError as exc:
            self._metrics.audit_failures.labels("write").inc()
            if self._write_problem is None:
                log.error("audit_write_failed", path=self.path, reason=exc.strerror, on_failure=self.on_failure)
            self._write_problem = f"write failed: {exc.strerror or exc}"
            self._set_health()
            return False
        if self._write_problem is not None:
            log.info("audit_write_recovered", path=self.path)
            self._write_problem = None
            self._set_health()
        return True

    def _append(self, line: str) -> None:
        assert self._fd is not None
        data = (("\n" if self._torn else "") + line).encode()
        rest = memoryview(data)
        while rest:
            try:
                rest = rest[os.write(self._fd, rest) :]
            except OSError:
                # Part of the line may be in the file: the next record starts on a line of its own.
                self._torn = self._torn or len(rest) < len(data)
                raise
        self._torn = False

    def rotation(
        self,
        *,
        name: str,
        arn: str,
        old_version: str | None,
        new_version: str,
        how: str,
        delay_seconds: float | None = None,
    ) -> None:
        """Record an observed AWSCURRENT move (and how long after the new version's creation it was seen)."""
        record: dict[str, Any] = {
            "type": "rotation",
            "name": name,
            "arn": arn,
            "old_version": old_version,
            "new_version": new_version,
            "how": how,
        }
        if delay_seconds is not None:
            record["delay_seconds"] = round(delay_seconds, 3)
        self.write(record)

    def upstream_burst(self, burst: FailureBurst) -> None:
        """Record a failure burst starting or ending (an :class:`~agent.upstream.health.UpstreamHealth` listener)."""
        if burst.seconds is None:
            self.write({"type": "upstream_failure_started", "operation": burst.operation, "error": burst.first_error})
            return
        self.write(
            {
                "type": "upstream_failure_ended",
                "failures": burst.failures,
                "first_error": burst.first_error,
                "seconds": round(burst.seconds, 3),
            }
        )


def recorded_rotations(path: str, *, max_bytes: int = RESTORE_MAX_BYTES) -> list[dict[str, Any]]:
    """Rotation records in the last ``max_bytes`` of an audit file, oldest first ([] if it cannot be read).

    Read at start to restore rotation history; only the file's tail, so a
    large trail costs a bounded read. Each record has ``arn``,
    ``new_version``, ``old_version``, ``how``, ``seen_at`` (epoch seconds) and
    ``delay_seconds`` (or None).
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            tail = handle.read()
    except OSError:
        return []
    if size > max_bytes:
        tail = tail.partition(b"\n")[2]  # the first line is cut
    found = []
    for line in tail.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
            if record.get("type") != "rotation" or not isinstance(record.get("new_version"), str):
                continue
            seen = parse_rfc3339(str(record["time"]))
        except (ValueError, KeyError, AttributeError, TypeError):
            continue  # a torn or foreign line
        if not isinstance(record.get("arn"), str):
            continue
        delay = record.get("delay_seconds")
        found.append(
            {
                "arn": record["arn"],
                "new_version": record["new_version"],
                "old_version": record.get("old_version") if isinstance(record.get("old_version"), str) else None,
                "how": str(record.get("how") or "poll"),
                "seen_at": seen,
                "delay_seconds": float(delay) if isinstance(delay, int | float) else None,
            }
        )
    return found


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
