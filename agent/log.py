"""Logging: one structlog setup for the agent and for the stdlib loggers under it.

JSON lines off a TTY, a console renderer on one. Every event passes
:func:`redact`, which blanks fields whose *name* says they hold secret material,
as a second line of defence: the code never passes values or tokens to the
logger in the first place.

botocore at DEBUG logs whole response bodies, secret values included, so its
loggers (and boto3's, urllib3's) are pinned at WARNING whatever the agent's
level is.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# Lower-cased field names whose values are never logged.
SENSITIVE_KEYS = frozenset(
    {
        "secretstring",
        "secret_string",
        "secretbinary",
        "secret_binary",
        "secret_value",
        "value",
        "token",
        "authorization",
        "password",
        "x-aws-parameters-secrets-token",
        "x-vault-token",
    }
)
REDACTED = "[redacted]"
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace values of sensitive-named fields."""
    for key in event:
        if key.lower() in SENSITIVE_KEYS:
            event[key] = REDACTED
    return event


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging through the same pipeline."""
    out = stream or sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # aiohttp's own access log duplicates our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A named structlog logger."""
    return structlog.stdlib.get_logger(name)
