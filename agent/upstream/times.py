"""Upstream times as epoch seconds: what botocore's parsers hand back, and how the agent reads it."""

from __future__ import annotations

from typing import Any

from botocore.utils import parse_timestamp


def epoch_or_parsed(value: Any) -> Any:
    """botocore's timestamp parser, except that epoch seconds (how JSON protocols send times) stay a float.

    botocore turns every timestamp into a ``datetime`` with a new ``tzlocal``
    zone, about 10 µs each; a ListSecrets pass over 1,000 secrets parses some
    4,000 of them in a worker thread that holds the GIL, so the event loop
    (and the hot path) stood still for ~40 ms every pass, and the heap churned.
    Secrets Manager, SSM and SQS speak JSON and send numbers; STS (query
    protocol) sends strings, which are still parsed as botocore does, so the
    credential providers keep the ``datetime`` they expect.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return parse_timestamp(value)


def epoch_seconds(value: Any) -> float | None:
    """A parsed timestamp as epoch seconds, whichever parser made it (None stays None)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value.timestamp() if value is not None and hasattr(value, "timestamp") else None
