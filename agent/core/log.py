"""Logging: one structlog setup for the agent and for the stdlib loggers under it.

JSON lines off a TTY, a console renderer on one. The agent's own events go
straight from structlog to the stream (a filtering bound logger drops
below-level events before any work, and no ``logging.LogRecord`` is built:
one line per request is the hot path). Third-party stdlib loggers (aiohttp,
asyncio, botocore) are rendered by the same processors through
``ProcessorFormatter``, so every line has one shape.

Every event passes :func:`redact`, which blanks fields whose *name* says they
hold secret material, as a second line of defence: the code never passes values
or tokens to the logger in the first place.

botocore at DEBUG logs whole response bodies, secret values included, so its
loggers (and boto3's, urllib3's) are pinned at WARNING whatever the agent's
own level is.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any, TextIO

# structlog imports rich and colorama, when they happen to be installed (import-linter brings rich into
# the dev environment), for its development console's tracebacks and Windows colours. The agent renders
# exceptions itself (format_exc_info) and never colours, so they would be 3 MiB of RSS for nothing.
OPTIONAL_EXTRAS = ("rich", "colorama")


def _import_structlog() -> ModuleType:
    """structlog, imported (first) with its optional extras hidden; anyone may still import them later."""
    if "structlog" in sys.modules or any(name in sys.modules for name in OPTIONAL_EXTRAS):
        return importlib.import_module("structlog")  # already loaded: hiding anything now saves nothing
    for name in OPTIONAL_EXTRAS:
        sys.modules[name] = None  # type: ignore[assignment]  # None: "import rich" fails, as if not installed
    try:
        return importlib.import_module("structlog")
    finally:
        for name in OPTIONAL_EXTRAS:
            del sys.modules[name]


_import_structlog()
import structlog  # noqa: E402 - already imported just above, without its optional extras

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
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiocache")


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: replace values of sensitive-named fields."""
    for key in event:
        if key.lower() in SENSITIVE_KEYS:
            event[key] = REDACTED
    return event


class DropExceptionText(logging.Filter):
    """Strip exception text from third-party records.

    aiohttp's parser puts the offending raw header line, which may hold a
    token, in the message of the exception it logs for a malformed request.
    Third-party records keep their own message and the exception's class name
    only; the agent's own events are unaffected (they never carry values).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, without its exception text."""
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None, *, cache: bool = True) -> None:
    """Configure structlog and route stdlib logging through the same renderer.

    ``cache=False`` keeps loggers re-reading the configuration, which
    ``structlog.testing.capture_logs`` needs in tests.
    """
    out = stream or sys.stdout
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_NamedWriteLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            redact,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(DropExceptionText())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # aiohttp's own access log would duplicate our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _NamedWriteLogger(structlog.WriteLogger):
    """A ``WriteLogger`` with a ``name``, which ``add_logger_name`` puts in each event."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else "agent")


def get_logger(name: str) -> Any:
    """A lazy structlog logger whose events carry ``logger=name``."""
    return structlog.get_logger(name)
