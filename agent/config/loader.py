"""Settings: built once from defaults < TOML file < ``SECRETS_AGENT_*`` env < CLI.

This is the only module that reads the environment or the config file. Every
other component receives a frozen :class:`Settings`.

Each key is declared once in :data:`SCHEMA` with its type, default and allowed
range. Loading collects *every* problem (unknown key, wrong type, out of range,
unusable token source) and raises one :class:`~agent.core.errors.ConfigError`
naming them all, so a user fixes a file in one pass rather than one error per
restart.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from agent.config.access import (
    DEFAULT_CLIENT,
    ClientSettings,
    SecretPolicySettings,
    TokenRef,
    parse_clients,
    parse_secret_policies,
    resolve_token,
)
from agent.config.delivery import (
    ExecSettings,
    SystemdSettings,
    TemplateSettings,
    parse_exec,
    parse_templates,
    systemd_from_env,
)
from agent.core.errors import ConfigError

ENV_PREFIX = "SECRETS_AGENT_"
ENV_CONFIG_PATH = "SECRETS_AGENT_CONFIG"

DEFAULT_PORT = 2773
DEFAULT_TOKEN = "env:AWS_TOKEN"
DEFAULT_TOKEN_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
DEFAULT_MAX_CONNECTIONS = 800
MAX_CONNECTIONS_RANGE = (1, 10_000)
DEFAULT_TTL_SECONDS = 300
TTL_RANGE = (0, 86_400)
DEFAULT_MAX_ENTRIES = 1000
MAX_ENTRIES_RANGE = (1, 1_000_000)
DEFAULT_MAX_STALE_SECONDS = 86_400
MAX_STALE_RANGE = (0, 30 * 86_400)
DEFAULT_REFRESH_INTERVAL = 30
REFRESH_INTERVAL_RANGE = (1, 86_400)
REFRESH_MODES = ("poll", "ttl")
DEFAULT_READ_TIMEOUT = 10
DEFAULT_MAX_ATTEMPTS = 3  # botocore "standard" retry mode's own default

Kind = Literal["str", "opt_str", "int", "bool", "mode", "str_list", "tags", "level", "format", "mode_choice"]
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


@dataclass(frozen=True)
class _Key:
    kind: Kind
    default: Any
    bounds: tuple[int, int] | None = None


# section -> key -> spec. The public contract: names here are what users write.
# Arrays of tables ([[clients]], [[secret_policies]]) are validated in config_access.
SCHEMA: dict[str, dict[str, _Key]] = {
    "server": {
        "http_host": _Key("str", "127.0.0.1"),
        "http_port": _Key("int", DEFAULT_PORT, (0, 65535)),
        "unix_socket": _Key("opt_str", None),
        "unix_socket_mode": _Key("mode", 0o660, (0, 0o777)),
        "max_connections": _Key("int", DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_RANGE),
        "allow_non_loopback": _Key("bool", False),
    },
    "auth": {
        "token": _Key("str", DEFAULT_TOKEN),
        "headers": _Key("str_list", DEFAULT_TOKEN_HEADERS),
    },
    "aws": {
        "region": _Key("opt_str", None),
        "endpoint_url": _Key("opt_str", None),
        "role_arn": _Key("opt_str", None),
        "validate_credentials": _Key("bool", True),
        "read_timeout_seconds": _Key("int", DEFAULT_READ_TIMEOUT, (1, 120)),
        "max_attempts": _Key("int", DEFAULT_MAX_ATTEMPTS, (1, 10)),
    },
    "cache": {
        "ttl_seconds": _Key("int", DEFAULT_TTL_SECONDS, TTL_RANGE),
        "max_entries": _Key("int", DEFAULT_MAX_ENTRIES, MAX_ENTRIES_RANGE),
        "max_stale_seconds": _Key("int", DEFAULT_MAX_STALE_SECONDS, MAX_STALE_RANGE),
    },
    "refresh": {
        "mode": _Key("mode_choice", "poll"),
        "interval_seconds": _Key("int", DEFAULT_REFRESH_INTERVAL, REFRESH_INTERVAL_RANGE),
    },
    "events": {
        "sqs_queue_url": _Key("opt_str", None),
        "wait_time_seconds": _Key("int", 20, (1, 20)),
    },
    "prefetch": {
        "secrets": _Key("str_list", ()),
        "name_prefixes": _Key("str_list", ()),
        "tags": _Key("tags", ()),
    },
    "log": {
        "level": _Key("level", "info"),
        "format": _Key("format", None),
    },
    "metrics": {
        "public": _Key("bool", False),
    },
    "audit": {
        "path": _Key("opt_str", None),
    },
}


@dataclass(frozen=True)
class ServerSettings:
    """Listeners and connection limits."""

    http_host: str
    http_port: int
    unix_socket: str | None
    unix_socket_mode: int
    max_connections: int
    allow_non_loopback: bool


@dataclass(frozen=True)
class AuthSettings:
    """How callers prove they may read."""

    token: TokenRef | None  # None only when [[clients]] exist and auth.token is not set
    headers: tuple[str, ...]


@dataclass(frozen=True)
class AwsSettings:
    """How to reach Secrets Manager and as whom."""

    region: str | None
    endpoint_url: str | None
    role_arn: str | None
    validate_credentials: bool
    read_timeout_seconds: int = DEFAULT_READ_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class CacheSettings:
    """Cache bounds."""

    ttl_seconds: int
    max_entries: int
    max_stale_seconds: int = DEFAULT_MAX_STALE_SECONDS


@dataclass(frozen=True)
class RefreshSettings:
    """How cached secrets are kept fresh: background polling or AWS-agent-style TTL."""

    mode: Literal["poll", "ttl"]
    interval_seconds: int


@dataclass(frozen=True)
class EventsSettings:
    """Optional SQS queue fed by an EventBridge rule on aws.secretsmanager."""

    sqs_queue_url: str | None
    wait_time_seconds: int


@dataclass(frozen=True)
class PrefetchSettings:
    """What to load before declaring readiness."""

    secrets: tuple[str, ...]
    name_prefixes: tuple[str, ...]
    tags: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class LogSettings:
    """Log level and rendering."""

    level: str
    format: Literal["json", "console"]


@dataclass(frozen=True)
class MetricsSettings:
    """Whether ``/metrics`` may be scraped without a token."""

    public: bool


@dataclass(frozen=True)
class AuditSettings:
    """Where audit records go: a file path, ``-`` for stdout, or None (off)."""

    path: str | None


@dataclass(frozen=True)
class Settings:
    """Everything the agent needs, validated once."""

    server: ServerSettings
    auth: AuthSettings
    aws: AwsSettings
    cache: CacheSettings
    prefetch: PrefetchSettings
    log: LogSettings
    metrics: MetricsSettings
    refresh: RefreshSettings = RefreshSettings(mode="poll", interval_seconds=DEFAULT_REFRESH_INTERVAL)
    events: EventsSettings = EventsSettings(sqs_queue_url=None, wait_time_seconds=20)
    clients: tuple[ClientSettings, ...] = ()
    secret_policies: tuple[SecretPolicySettings, ...] = ()
    audit: AuditSettings = AuditSettings(path=None)
    templates: tuple[TemplateSettings, ...] = ()
    exec: ExecSettings = field(default_factory=ExecSettings)
    systemd: SystemdSettings = field(default_factory=SystemdSettings)
    warnings: tuple[str, ...] = ()
    source: str | None = None


# ----------------------------------------------------------------------------- coercion


class _Bad(ValueError):
    """A value has the wrong type or is out of range (message says which)."""


def _as_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
    raise _Bad(f"expected true or false, got {raw!r}")


def _as_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _Bad(f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip(), 10)
        except ValueError:
            pass
    raise _Bad(f"expected an integer, got {raw!r}")


def _as_mode(raw: Any) -> int:
    # Strings are octal ("0660", "660", "0o660"); TOML integers are taken as
    # written, so `0o660` works and a bare decimal 660 is caught by the range.
    if isinstance(raw, str):
        text = raw.strip().lower().removeprefix("0o")
        try:
            return int(text, 8)
        except ValueError as exc:
            raise _Bad(f'expected an octal file mode like "0660", got {raw!r}') from exc
    return _as_int(raw)


def _as_str_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise _Bad(f"expected a JSON list of strings, got {raw!r}") from exc
        else:
            return tuple(part.strip() for part in text.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise _Bad(f"expected a list of strings, got {raw!r}")


def _as_tags(raw: Any) -> tuple[tuple[str, str | None], ...]:
    # Either a table {env = "prod"} or a list of "key" / "key=value" strings.
    if isinstance(raw, dict):
        if not all(isinstance(v, str) for v in raw.values()):
            raise _Bad("tag values must be strings")
        return tuple((str(k), v) for k, v in raw.items())
    out: list[tuple[str, str | None]] = []
    for item in _as_str_list(raw):
        key, sep, value = item.partition("=")
        if not key:
            raise _Bad(f"empty tag key in {item!r}")
        out.append((key, value if sep else None))
    return tuple(out)


def _as_opt_str(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _Bad(f"expected a string, got {raw!r}")
    return raw or None


def _as_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Bad(f"expected a string, got {raw!r}")
    return raw


def _as_choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        if isinstance(raw, str) and raw.strip().lower() in choices:
            return raw.strip().lower()
        raise _Bad(f"expected one of {', '.join(choices)}, got {raw!r}")

    return parse


_COERCE: dict[Kind, Callable[[Any], Any]] = {
    "str": _as_str,
    "opt_str": _as_opt_str,
    "int": _as_int,
    "bool": _as_bool,
    "mode": _as_mode,
    "str_list": _as_str_list,
    "tags": _as_tags,
    "level": _as_choice(LOG_LEVELS),
    "mode_choice": _as_choice(REFRESH_MODES),
    "format": lambda raw: None if raw is None else _as_choice(LOG_FORMATS)(raw),
}


# ----------------------------------------------------------------------------- loading


def load_settings(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    stdout_is_tty: bool = False,
) -> Settings:
    """Build :class:`Settings` from file, environment and CLI overrides.

    ``overrides`` maps dotted keys (``"server.http_port"``) to values from the
    command line. Raises :class:`ConfigError` listing every problem found.
    """
    env = dict(os.environ if environ is None else environ)
    problems: list[tuple[str, str]] = []
    raw: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}

    arrays: dict[str, Any] = {}
    path = config_path or env.get(ENV_CONFIG_PATH)
    if path:
        _merge_file(path, raw, arrays, problems)
    _merge_env(env, raw, problems)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if value is not None:
            raw[section][key] = value

    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, spec in keys.items():
            dotted = f"{section}.{key}"
            value = raw[section].get(key, spec.default)
            try:
                value = _COERCE[spec.kind](value)
            except _Bad as exc:
                problems.append((dotted, str(exc)))
                value = spec.default
            if spec.bounds and isinstance(value, int):
                low, high = spec.bounds
                if not low <= value <= high:
                    shown = f"{value:#o}" if spec.kind == "mode" else str(value)
                    problems.append((dotted, f"{shown} is out of range {low}..{high}"))
                    value = spec.default
            values[section][key] = value

    warnings: list[str] = []
    server = ServerSettings(**values["server"])
    _check_server(server, problems)
    clients = parse_clients(arrays.get("clients"), env, problems, warnings)
    templates = parse_templates(arrays.get("templates"), problems)
    exec_settings = parse_exec(arrays.get("exec"), problems)
    policies = parse_secret_policies(arrays.get("secret_policies"), problems)
    # With [[clients]] the shared token is optional: only an explicitly set one must resolve.
    token_problems: list[tuple[str, str]] = []
    token = resolve_token(values["auth"]["token"], env, token_problems, warnings)
    if not clients or "token" in raw["auth"]:
        problems.extend(token_problems)
    headers = tuple(h.strip() for h in values["auth"]["headers"] if h.strip())
    if not headers:
        problems.append(("auth.headers", "needs at least one header name"))
    aws = AwsSettings(**values["aws"])
    _check_aws(aws, problems)
    audit_path = values["audit"]["path"]
    if audit_path not in (None, "-") and not Path(audit_path).parent.is_dir():
        problems.append(("audit.path", f"directory {Path(audit_path).parent} does not exist"))
    queue = values["events"]["sqs_queue_url"]
    if queue is not None and urlparse(queue).scheme not in ("http", "https"):
        problems.append(("events.sqs_queue_url", f"expected an https:// SQS queue URL, got {queue!r}"))
    log_values = values["log"]
    if log_values["format"] is None:
        log_values["format"] = "console" if stdout_is_tty else "json"

    known = {client.name for client in clients} | ({DEFAULT_CLIENT} if token else set())
    for index, policy in enumerate(policies):
        for reader in (*policy.readers, *policy.deny):
            if reader not in known:
                warnings.append(f"secret_policies[{index}] names client {reader!r}, which does not exist")

    if problems:
        raise ConfigError(problems)
    return Settings(
        server=server,
        auth=AuthSettings(token=token, headers=headers),
        aws=aws,
        cache=CacheSettings(**values["cache"]),
        prefetch=PrefetchSettings(**values["prefetch"]),
        log=LogSettings(**log_values),
        metrics=MetricsSettings(**values["metrics"]),
        refresh=RefreshSettings(**values["refresh"]),
        events=EventsSettings(**values["events"]),
        clients=clients,
        secret_policies=policies,
        audit=AuditSettings(**values["audit"]),
        templates=templates,
        exec=exec_settings,
        systemd=systemd_from_env(env),
        warnings=tuple(warnings),
        source=path,
    )


# Validated outside SCHEMA: arrays of tables, and [exec] whose env list has its own syntax.
ARRAY_SECTIONS = ("clients", "secret_policies", "templates", "exec")


def _merge_file(
    path: str, raw: dict[str, dict[str, Any]], arrays: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(("--config", f"file not found: {path}"))
        return
    except OSError as exc:
        problems.append(("--config", f"cannot read {path}: {exc.strerror}"))
        return
    except tomllib.TOMLDecodeError as exc:
        problems.append(("--config", f"{path} is not valid TOML: {exc}"))
        return
    for section, table in data.items():
        if section in ARRAY_SECTIONS:
            arrays[section] = table
            continue
        if section not in SCHEMA:
            problems.append((section, "unknown section"))
            continue
        if not isinstance(table, dict):
            problems.append((section, "expected a [section] table"))
            continue
        for key, value in table.items():
            if key not in SCHEMA[section]:
                problems.append((f"{section}.{key}", "unknown key"))
            else:
                raw[section][key] = value


def _merge_env(env: Mapping[str, str], raw: dict[str, dict[str, Any]], problems: list[tuple[str, str]]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in SCHEMA or key not in SCHEMA[section]:
            problems.append((name, "unknown setting (expected SECRETS_AGENT_<SECTION>_<KEY>)"))
            continue
        raw[section][key] = value


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_server(server: ServerSettings, problems: list[tuple[str, str]]) -> None:
    if not server.http_host:
        problems.append(("server.http_host", "must not be empty"))
    elif not is_loopback_host(server.http_host) and not server.allow_non_loopback:
        problems.append(
            (
                "server.http_host",
                f"{server.http_host!r} is not a loopback address; the agent serves secrets "
                "to co-located apps only. Set server.allow_non_loopback = true to bind it anyway",
            )
        )
    if server.unix_socket is not None:
        parent = Path(server.unix_socket).parent
        if not parent.is_dir():
            problems.append(("server.unix_socket", f"directory {parent} does not exist"))
        elif len(os.fsencode(server.unix_socket)) > 107:
            problems.append(("server.unix_socket", "path is longer than the 107 bytes a Unix socket allows"))


def _check_aws(aws: AwsSettings, problems: list[tuple[str, str]]) -> None:
    if aws.endpoint_url is not None:
        parsed = urlparse(aws.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(("aws.endpoint_url", f"expected an http(s) URL, got {aws.endpoint_url!r}"))
    if aws.role_arn is not None and not (aws.role_arn.startswith("arn:") and ":role/" in aws.role_arn):
        problems.append(("aws.role_arn", f"expected an IAM role ARN, got {aws.role_arn!r}"))
