"""``GET /status``: the agent, upstream, cache and every cached secret's rotations, health and readers.

Token-protected like reads (the guard runs first: X-Forwarded-For 400, Host,
token 403, method 405), and a client sees only the secrets its policies let
it read. It never holds a secret value or a token: names, ARNs, version ids,
times and counts only. Times are RFC 3339 UTC strings (or null).

The names are a public contract (scripts, ``secrets-agent status`` and the
``/ui`` page read them): top level ``agent``, ``upstream``, ``cache``,
``secrets``; each secret has ``name``, ``arn``, ``version_id``, ``versions``,
``health``, ``health_reason``, ``last_checked``, ``last_changed``,
``rotation`` (``enabled``, ``schedule``, ``last``, ``next``),
``staleness_seconds``, ``spans``, ``reads`` (``client``, ``last_hour``,
``last_day``, ``denied``, ``hourly``), ``old_version_readers`` and
``history`` (newest first: ``version_id``, ``previous_version_id``,
``seen_at``, ``how``, ``delay_seconds``).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from agent import __version__
from agent.cache.health import SEVERITY
from agent.cache.store import STAGE_CURRENT
from agent.core.types import format_rfc3339
from agent.server.context import CLIENT_KEY, COMPONENTS, Components
from agent.server.health import readiness


def rfc3339(epoch: float | None) -> str | None:
    """``2026-11-30T23:59:01Z`` (whole seconds), or None."""
    return None if epoch is None else format_rfc3339(epoch)


async def status(request: web.Request) -> web.Response:
    """The status document for the calling client."""
    parts = request.app[COMPONENTS]
    document = await build_status(parts, request[CLIENT_KEY])
    response = web.json_response(document)
    response.headers["Cache-Control"] = "no-store"
    return response


async def build_status(parts: Components, client: str, *, now: float | None = None) -> dict[str, Any]:
    """The ``/status`` document as ``client`` may see it."""
    wall = time.time() if now is None else now
    ready, reason = await readiness(parts)
    upstream = parts.upstream
    counts = parts.metrics.lookup_counts
    hits = counts.get("hit", 0) + counts.get("revalidating", 0) + counts.get("stale", 0)
    misses = sum(counts.values()) - hits
    arns, mono = parts.cache.arns(), time.monotonic()  # one "now" for every age in the document
    secrets = [entry for arn in arns if (entry := await _secret(parts, client, arn, wall, mono)) is not None]
    secrets.sort(key=lambda entry: (SEVERITY.get(entry["health"], 9), entry["name"]))
    return {
        "agent": {
            "version": __version__,
            "started_at": rfc3339(parts.started_at),
            "now": rfc3339(wall),
            "uptime_seconds": round(wall - parts.started_at, 3),
            "ready": ready,
            "ready_reason": reason,
        },
        "upstream": {
            "healthy": upstream.healthy,
            "last_success": rfc3339(upstream.last_success),
            "last_failure": rfc3339(upstream.last_failure),
            "failure_burst": upstream.failure_burst,
            "last_error": upstream.last_error,
        },
        "cache": {
            "secrets": len(arns),
            "entries": len(parts.cache),
            "max_entries": parts.cache.max_entries,
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "secrets": secrets,
    }


async def _secret(parts: Components, client: str, arn: str, wall: float, mono: float) -> dict[str, Any] | None:
    cache, watch = parts.cache, parts.watch
    name = cache.name_of(arn) or arn
    if not parts.reader.may_read(client, arn=arn, name=name):
        return None
    current = await cache.peek(arn, STAGE_CURRENT)
    versions = sorted({entry.value.version_id for _key, entry in await cache.entries(arn)})
    held = cache.metadata.get(arn)
    meta = held[0] if held is not None else None
    age = mono - current.confirmed_at if current is not None else None
    version_id = current.value.version_id if current is not None else None
    history = watch.history.changes(arn)
    last_changed = watch.last_changed(arn, meta)
    health = watch.health.health(arn)
    return {
        "name": name,
        "arn": arn,
        "version_id": version_id,
        "versions": versions,
        "health": health,
        "health_reason": watch.health.reason(arn),
        "last_checked": rfc3339(wall - age) if age is not None else None,
        "last_changed": rfc3339(last_changed),
        "rotation": {
            "enabled": meta.rotation_enabled if meta is not None else None,
            "schedule": meta.rotation_schedule if meta is not None else None,
            "last": rfc3339(meta.last_rotated if meta is not None else None),
            "next": rfc3339(meta.next_rotation if meta is not None else None),
        },
        "staleness_seconds": round(age, 3) if age is not None else None,
        "spans": [
            {"health": span.health, "start": rfc3339(span.start), "end": rfc3339(span.end)}
            for span in watch.health.spans(arn)
        ],
        "reads": [
            {
                "client": reads.client,
                "last_hour": reads.last_hour,
                "last_day": reads.last_day,
                "denied": reads.denied,
                "hourly": [[rfc3339(start), count] for start, count in reads.hourly],
            }
            for reads in watch.usage.reads(arn)
        ],
        "old_version_readers": [
            {
                "client": old.client,
                "version_id": old.version_id,
                "reads": old.reads,
                "last_read": rfc3339(old.last_read),
            }
            for old in watch.usage.old_version_readers(arn, version_id)
        ],
        "history": [
            {
                "version_id": change.version_id,
                "previous_version_id": change.previous_version_id,
                "seen_at": rfc3339(change.seen_at),
                "how": change.how,
                "delay_seconds": round(change.delay_seconds, 3) if change.delay_seconds is not None else None,
            }
            for change in history
        ],
    }
