"""Settings for delivering secrets beyond HTTP: ``[[templates]]``, ``[exec]`` and systemd.

Part of the config package. ``[exec]`` is an ordinary section of the schema
(its keys are declared in :mod:`agent.config.schema`); ``[[templates]]`` is an
array of tables validated here. Problems name their key as
``templates[0].destination`` or ``exec.env[1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.config.kinds import Bad, Problems, boolean, check, file_mode, string_list, table_array

TEMPLATE_KEYS = frozenset(
    {"destination", "source", "contents", "perms", "owner", "group", "command", "error_on_missing_key"}
)


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


def env_refs(raw: Any) -> tuple[EnvRef, ...]:
    """A list of ``NAME=secret-id[#field]`` (a config kind; see :mod:`agent.config.kinds`)."""
    refs = []
    for index, text in enumerate(string_list(raw)):
        try:
            refs.append(EnvRef.parse(text))
        except ValueError as exc:
            raise Bad(str(exc), at=f"[{index}]") from None
    return tuple(refs)


@dataclass(frozen=True)
class ExecSettings:
    """A child process run with secrets in its environment (``secrets-agent exec``)."""

    command: tuple[str, ...]
    env: tuple[EnvRef, ...]
    on_change: Literal["restart", "signal", "none"]
    signal: str
    grace_seconds: float
    check_seconds: float


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
        default_perms = TemplateSettings.perms
        perms = check(file_mode, entry.get("perms", default_perms), f"{at}.perms", problems, default_perms)
        for key in ("owner", "group", "command"):
            if entry.get(key) is not None and not isinstance(entry[key], str | int):
                problems.append((f"{at}.{key}", "expected a string"))
        strict_default = TemplateSettings.error_on_missing_key
        strict = check(
            boolean, entry.get("error_on_missing_key", strict_default), f"{at}.error_on_missing_key", problems, True
        )
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


def systemd_from_env(env: Mapping[str, str]) -> SystemdSettings:
    """``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (when meant for this process) from the environment."""
    watchdog = env.get("WATCHDOG_USEC")
    usec = int(watchdog) if watchdog and watchdog.isdigit() else None
    return SystemdSettings(notify_socket=env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)
