"""Settings for delivering secrets beyond HTTP: ``[[templates]]``, ``[exec]`` and systemd.

Part of configuration (only ``config.py`` calls in here). Problems name their
key as ``templates[0].destination`` or ``exec.on_change``.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.config.access import table_array

TEMPLATE_KEYS = frozenset(
    {"destination", "source", "contents", "perms", "owner", "group", "command", "error_on_missing_key"}
)
EXEC_KEYS = frozenset({"command", "env", "on_change", "signal", "grace_seconds", "check_seconds"})
ON_CHANGE = ("restart", "signal", "none")
Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class TemplateSettings:
    """One file rendered from secrets with Jinja2 (sandboxed)."""

    destination: str
    source: str | None = None
    contents: str | None = None
    perms: int = 0o600
    owner: str | None = None
    group: str | None = None
    command: str | None = None
    error_on_missing_key: bool = True


@dataclass(frozen=True)
class EnvRef:
    """``NAME=secret-id[#field]``: an environment variable filled from a secret."""

    name: str
    secret_id: str
    field: str | None = None

    @classmethod
    def parse(cls, text: str) -> EnvRef:
        """Parse ``NAME=id#field``; raises ValueError with the reason."""
        name, sep, ref = text.partition("=")
        if not sep or not name or not ref:
            raise ValueError(f"expected NAME=secret-id[#field], got {text!r}")
        if not (name[0].isalpha() or name[0] == "_") or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        secret_id, _, field = ref.partition("#")
        return cls(name=name, secret_id=secret_id, field=field or None)


@dataclass(frozen=True)
class ExecSettings:
    """A child process run with secrets in its environment (``secrets-agent exec``)."""

    command: tuple[str, ...] = ()
    env: tuple[EnvRef, ...] = ()
    on_change: Literal["restart", "signal", "none"] = "restart"
    signal: str = "SIGHUP"
    grace_seconds: float = 10.0
    check_seconds: float = 2.0


@dataclass(frozen=True)
class SystemdSettings:
    """What systemd told the process through its environment."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None


def parse_templates(raw: Any, problems: Problems) -> tuple[TemplateSettings, ...]:
    """Validate the ``[[templates]]`` array."""
    out = []
    for at, entry in table_array(raw, "templates", TEMPLATE_KEYS, problems):
        destination = entry.get("destination")
        if not isinstance(destination, str) or not destination.startswith("/"):
            problems.append((f"{at}.destination", "needs an absolute file path"))
            continue
        if not Path(destination).parent.is_dir():
            problems.append((f"{at}.destination", f"directory {Path(destination).parent} does not exist"))
        source, contents = entry.get("source"), entry.get("contents")
        if (source is None) == (contents is None):
            problems.append((at, "give exactly one of source (a template file) or contents (inline)"))
        elif source is not None and (not isinstance(source, str) or not Path(source).is_file()):
            problems.append((f"{at}.source", f"template file not found: {source!r}"))
        elif contents is not None and not isinstance(contents, str):
            problems.append((f"{at}.contents", "expected a string"))
        else:
            _check_syntax(contents if contents is not None else Path(str(source)).read_text(), at, problems)
        perms_raw = entry.get("perms", "0600")
        try:
            perms = int(perms_raw, 8) if isinstance(perms_raw, str) else int(perms_raw)
            if not 0 <= perms <= 0o777:
                raise ValueError
        except (TypeError, ValueError):
            problems.append((f"{at}.perms", f'expected an octal mode like "0640", got {perms_raw!r}'))
            perms = 0o600
        for key in ("owner", "group", "command"):
            if entry.get(key) is not None and not isinstance(entry[key], str | int):
                problems.append((f"{at}.{key}", "expected a string"))
        strict = entry.get("error_on_missing_key", True)
        if not isinstance(strict, bool):
            problems.append((f"{at}.error_on_missing_key", "expected true or false"))
            strict = True
        out.append(
            TemplateSettings(
                destination=destination,
                source=source,
                contents=contents,
                perms=perms,
                owner=None if entry.get("owner") is None else str(entry["owner"]),
                group=None if entry.get("group") is None else str(entry["group"]),
                command=entry.get("command"),
                error_on_missing_key=strict,
            )
        )
    return tuple(out)


def _check_syntax(text: str, at: str, problems: Problems) -> None:
    import jinja2  # only when templates are configured

    try:
        jinja2.Environment(autoescape=False).parse(text)  # noqa: S701 - config files are not HTML
    except jinja2.TemplateSyntaxError as exc:
        problems.append((at, f"template syntax error on line {exc.lineno}: {exc.message}"))


def parse_exec(raw: Any, problems: Problems) -> ExecSettings:
    """Validate the ``[exec]`` table."""
    if raw is None:
        return ExecSettings()
    if not isinstance(raw, dict):
        problems.append(("exec", "expected an [exec] table"))
        return ExecSettings()
    for unknown in sorted(set(raw) - EXEC_KEYS):
        problems.append((f"exec.{unknown}", "unknown key"))
    command = raw.get("command", [])
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
        problems.append(("exec.command", "expected a list of strings"))
        command = []
    refs = []
    for index, text in enumerate(raw.get("env", [])):
        try:
            refs.append(EnvRef.parse(str(text)))
        except ValueError as exc:
            problems.append((f"exec.env[{index}]", str(exc)))
    on_change = raw.get("on_change", "restart")
    if on_change not in ON_CHANGE:
        problems.append(("exec.on_change", f"expected one of {', '.join(ON_CHANGE)}, got {on_change!r}"))
        on_change = "restart"
    sig = str(raw.get("signal", "SIGHUP"))
    if not hasattr(signal, sig) or not sig.startswith("SIG"):
        problems.append(("exec.signal", f"unknown signal {sig!r}"))
        sig = "SIGHUP"
    numbers = {}
    for key, default in (("grace_seconds", 10.0), ("check_seconds", 2.0)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append((f"exec.{key}", f"expected a positive number, got {value!r}"))
            value = default
        numbers[key] = float(value)
    return ExecSettings(
        command=tuple(command),
        env=tuple(refs),
        on_change=on_change,
        signal=sig,
        grace_seconds=numbers["grace_seconds"],
        check_seconds=numbers["check_seconds"],
    )


def systemd_from_env(env: Mapping[str, str]) -> SystemdSettings:
    """``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (when meant for this process) from the environment."""
    watchdog = env.get("WATCHDOG_USEC")
    usec = int(watchdog) if watchdog and watchdog.isdigit() else None
    return SystemdSettings(notify_socket=env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)
