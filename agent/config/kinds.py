"""One parser per kind of configuration value, and the ``[[array]]`` table walker.

A parser takes what TOML, an environment variable or a CLI flag gave and
returns the typed value, or raises :class:`Bad`. Text from the environment
arrives as :class:`EnvText`, so list kinds can tell ``SECRETS_AGENT_PREFETCH_SECRETS="a,b"``
(two ids) from a TOML ``allow = "team/a,b"`` (one pattern). The loader turns
each :class:`Bad` into a ``(key, reason)`` problem, so every bad key is
reported at once. Token sources are checked elsewhere (:mod:`agent.config.access`),
and never echoed.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
from collections.abc import Callable
from typing import Any

Problems = list[tuple[str, str]]
Parser = Callable[[Any], Any]


class EnvText(str):
    """A value from an environment variable: list kinds split it (JSON array, else commas)."""

    __slots__ = ()


class Bad(ValueError):
    """A value has the wrong type or is out of range (the message says which).

    ``at`` narrows the key for list items: ``[2]`` makes ``exec.env`` read ``exec.env[2]``.
    """

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


def boolean(raw: Any) -> bool:
    """``true``/``false`` (TOML), or ``true/false/1/0/yes/no/on/off`` from text."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
    raise Bad(f"expected true or false, got {raw!r}")


def _in_range(value: int | float, low: float, high: float, shown: str) -> None:
    if not low <= value <= high:
        raise Bad(f"{shown} is out of range {_plain(low)}..{_plain(high)}")


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def integer(low: int, high: int) -> Parser:
    """A whole number in ``low..high``."""

    def parse(raw: Any) -> int:
        if isinstance(raw, str):
            try:
                raw = int(raw.strip(), 10)
            except ValueError:
                raise Bad(f"expected an integer, got {raw!r}") from None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise Bad(f"expected an integer, got {raw!r}")
        _in_range(raw, low, high, str(raw))
        return raw

    return parse


def number(low: float, high: float) -> Parser:
    """A number (integer or decimal) in ``low..high``, as a float."""

    def parse(raw: Any) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise Bad(f"expected a number, got {raw!r}") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise Bad(f"expected a number, got {raw!r}")
        _in_range(raw, low, high, _plain(raw))
        return float(raw)

    return parse


def file_mode(raw: Any) -> int:
    """An octal file mode: ``"0660"``, ``"660"``, ``"0o660"`` or a TOML ``0o660``.

    A bare TOML decimal such as ``660`` is taken as written and caught by the range.
    """
    if isinstance(raw, str):
        text = raw.strip().lower().removeprefix("0o")
        try:
            raw = int(text, 8)
        except ValueError:
            raise Bad(f'expected an octal file mode like "0660", got {raw!r}') from None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise Bad(f'expected an octal file mode like "0660", got {raw!r}')
    if not 0 <= raw <= 0o777:
        raise Bad(f"{raw:#o} is out of range 0..0o777")
    return raw


def string(raw: Any) -> str:
    """Any string."""
    if not isinstance(raw, str):
        raise Bad(f"expected a string, got {raw!r}")
    return str(raw)


def optional_string(raw: Any) -> str | None:
    """A string; empty or absent means unset."""
    if raw is None:
        return None
    return string(raw) or None


def string_list(raw: Any) -> tuple[str, ...]:
    """A list of non-empty strings.

    TOML gives a list, or one string taken as a list of one; text from the
    environment is a JSON array, or comma-separated with blanks dropped.
    """
    if isinstance(raw, EnvText):
        text = raw.strip()
        if not text.startswith("["):
            return tuple(part.strip() for part in text.split(",") if part.strip())
        try:
            raw = json.loads(text)
        except ValueError:
            raise Bad(f"expected a JSON list of strings, got {str(raw)!r}") from None
    elif isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list | tuple) and all(isinstance(item, str) and item for item in raw):
        return tuple(raw)
    raise Bad(f"expected a list of non-empty strings, got {raw!r}")


def tags(raw: Any) -> tuple[tuple[str, str | None], ...]:
    """A table ``{env = "prod"}``, or a list of ``"key"`` / ``"key=value"`` strings."""
    if isinstance(raw, dict):
        if not all(isinstance(v, str) for v in raw.values()):
            raise Bad("tag values must be strings")
        return tuple((str(k), v) for k, v in raw.items())
    out: list[tuple[str, str | None]] = []
    for item in string_list(raw):
        key, sep, value = item.partition("=")
        if not key:
            raise Bad(f"empty tag key in {item!r}")
        out.append((key, value if sep else None))
    return tuple(out)


def positive(raw: Any) -> float:
    """A number greater than zero, as a float."""
    value = number(float("-inf"), float("inf"))(raw)
    if value <= 0:
        raise Bad(f"expected a positive number, got {raw!r}")
    return float(value)


# First path segments of the agent's fixed routes: a path prefix may not take one over.
FIXED_ROUTE_ROOTS = (
    "secretsmanager",
    "systemsmanager",
    "value",
    "ping",
    "healthz",
    "readyz",
    "metrics",
    "status",
    "ui",
)


def path_prefix(raw: Any) -> str:
    """A URL path prefix such as ``/v1/``: starts with ``/``, given a trailing ``/``; not a fixed route's."""
    text = string(raw).strip()
    if not text.startswith("/") or text.strip("/") == "":
        raise Bad(f"expected a path such as '/v1/' (starting with '/', not '/' alone), got {raw!r}")
    if any(c in text for c in "{}?#% ") or "//" in text:
        raise Bad(f"expected a plain path (no braces, '?', '#', '%', spaces or '//'), got {raw!r}")
    if text.strip("/").split("/")[0] in FIXED_ROUTE_ROOTS:
        raise Bad(f"{raw!r} would take over a fixed route (/{text.strip('/').split('/')[0]}...)")
    return text if text.endswith("/") else text + "/"


def queue_prefix(raw: Any) -> str:
    """The start of an SQS queue name: 1..40 of ``A-Z a-z 0-9 _ -`` (SQS's alphabet, room left for a host)."""
    text = string(raw).strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", text):
        raise Bad(f"expected 1..40 letters, digits, '-' or '_' (SQS queue name characters), got {raw!r}")
    return text


def choice(*choices: str) -> Parser:
    """One of a closed set of words (case-insensitive)."""

    def parse(raw: Any) -> str:
        if isinstance(raw, str) and raw.strip().lower() in choices:
            return raw.strip().lower()
        raise Bad(f"expected one of {', '.join(choices)}, got {raw!r}")

    return parse


def optional(parser: Parser) -> Parser:
    """``parser``, or None when the value is unset."""

    def parse(raw: Any) -> Any:
        return None if raw is None else parser(raw)

    return parse


def signal_name(raw: Any) -> str:
    """The name of a real signal (``SIGHUP``, ``SIGUSR1``…); ``SIG_IGN``/``SIG_DFL`` are not signals."""
    name = string(raw).strip().upper()
    if name not in signal.Signals.__members__:
        raise Bad(f"unknown signal {raw!r} (expected a signal name such as SIGHUP or SIGUSR1)")
    return name


def uid_or_gid(raw: Any) -> int | None:
    """A numeric uid or gid, 0..4294967295."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32:
        return raw
    raise Bad(f"expected a numeric id 0..4294967295, got {raw!r}")


def argv(raw: Any) -> tuple[str, ...]:
    """A command and its arguments: a list; from the environment, text split as a shell would (or a JSON array)."""
    if isinstance(raw, EnvText) and not raw.strip().startswith("["):
        try:
            return tuple(shlex.split(raw))
        except ValueError as exc:
            raise Bad(f"cannot split the command: {exc}") from None
    return string_list(raw)


def check(parser: Parser, raw: Any, key: str, problems: Problems, fallback: Any = None) -> Any:
    """``parser(raw)``, or ``fallback`` with a problem recorded under ``key``."""
    try:
        return parser(raw)
    except Bad as exc:
        problems.append((key + exc.at, str(exc)))
        return fallback


def table_array(
    raw: Any, section: str, allowed: frozenset[str], problems: Problems
) -> list[tuple[str, dict[str, Any]]]:
    """``[[section]]`` entries as ``(key prefix, table)``, unknown keys reported; [] when absent or malformed."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append((section, f"expected [[{section}]] tables"))
        return []
    entries = []
    for index, entry in enumerate(raw):
        at = f"{section}[{index}]"
        for unknown in sorted(set(entry) - allowed):
            problems.append((f"{at}.{unknown}", "unknown key"))
        entries.append((at, entry))
    return entries
