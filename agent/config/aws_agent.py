"""AWS's agent's configuration file, read as is: each of its keys mapped to this agent's settings.

Two layouts are recognised: the flat one of AWS's agent 1.x (``http_port = "2773"``
at the top level, numbers often written as strings) and the nested one of later
versions (``[logging]``, ``[capabilities.secrets_manager]`` with ``.cache``,
``.security`` and ``.prefetch``). :func:`translate` turns either into this
agent's ``{section: {key: value}}``, which the loader then checks like a native
file. A key whose meaning differs here draws one warning; a key this agent has
no use for, or does not know, is refused naming it as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from agent.config.kinds import Problems

# AWS's agent reads the token from the first of these that is set.
AWS_TOKEN_ENV = ("AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
NESTED = "capabilities.secrets_manager"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Where each AWS key lives in the nested layout; the flat layout has all but `enabled`,
# `max_roles` and prefetch at the top level (and `http_address`, which only it has).
_NESTED_PATHS = {
    "log_level": "logging.log_level",
    "log_to_file": "logging.log_to_file",
    "enabled": f"{NESTED}.enabled",
    "http_port": f"{NESTED}.http_port",
    "path_prefix": f"{NESTED}.path_prefix",
    "max_conn": f"{NESTED}.max_conn",
    "max_roles": f"{NESTED}.max_roles",
    "region": f"{NESTED}.region",
    "ignore_transient_errors": f"{NESTED}.ignore_transient_errors",
    "validate_credentials": f"{NESTED}.validate_credentials",
    "credentials_file_path": f"{NESTED}.credentials_file_path",
    "ttl_seconds": f"{NESTED}.cache.ttl_seconds",
    "cache_size": f"{NESTED}.cache.cache_size",
    "ssrf_headers": f"{NESTED}.security.ssrf_headers",
    "ssrf_env_variables": f"{NESTED}.security.ssrf_env_variables",
    "cache_buffer_ratio": f"{NESTED}.prefetch.cache_buffer_ratio",
    "max_jitter_seconds": f"{NESTED}.prefetch.max_jitter_seconds",
    "secrets": f"{NESTED}.prefetch.secrets",
    "filter_tags": f"{NESTED}.prefetch.filter_tags",
}
FLAT_KEYS = frozenset(
    {
        "log_level",
        "log_to_file",
        "http_address",
        "http_port",
        "path_prefix",
        "max_conn",
        "region",
        "ignore_transient_errors",
        "validate_credentials",
        "credentials_file_path",
        "ttl_seconds",
        "cache_size",
        "ssrf_headers",
        "ssrf_env_variables",
    }
)
NESTED_TABLES = frozenset({"logging", "capabilities"})


def aws_agent_names(data: Mapping[str, Any]) -> list[str]:
    """The top-level names in ``data`` that only AWS's agent's file has (empty: not such a file)."""
    return [name for name in data if name in FLAT_KEYS or name in NESTED_TABLES]


class _Out:
    """The native settings being built, and what was said about them."""

    def __init__(self, problems: Problems, warnings: list[str]) -> None:
        self.raw: dict[str, dict[str, Any]] = {}
        self.problems = problems
        self.warnings = warnings

    def set(self, dotted: str, value: Any) -> None:
        section, _, key = dotted.partition(".")
        self.raw.setdefault(section, {})[key] = value

    def bad(self, at: str, reason: str) -> None:
        self.problems.append((at, reason))

    def differs(self, at: str, value: Any, mapped: str, how: str) -> None:
        shown = _toml_value(value) if isinstance(value, str | int | float | list | tuple) else repr(value)
        self.warnings.append(f"AWS agent key {at} = {shown} {mapped}: {how}")


def translate(data: Mapping[str, Any], problems: Problems, warnings: list[str]) -> dict[str, dict[str, Any]]:
    """Native ``{section: {key: value}}`` for AWS's agent's file ``data`` (either layout).

    Problems name the AWS key as written (``capabilities.secrets_manager.cache.cache_size``
    or ``cache_size``); warnings say, once per key, what differs.
    """
    out = _Out(problems, warnings)
    found: dict[str, tuple[str, Any]] = {}  # AWS key -> (as written, value)
    nested = [name for name in data if name in NESTED_TABLES]
    flat = [name for name in data if name not in NESTED_TABLES]
    if nested and flat:
        for name in flat:
            hint = f"; write it as {_NESTED_PATHS[name]}" if name in _NESTED_PATHS else ""
            out.bad(name, f"a top-level key in a file with [logging] or [capabilities] (AWS's nested layout){hint}")
    elif flat:
        for name in flat:
            if name in FLAT_KEYS:
                found[name] = (name, data[name])
            else:
                out.bad(name, "unknown key of AWS's agent's configuration")
    if nested:
        _collect_nested(data, found, out)

    for name, (at, value) in found.items():
        _MAPPERS[name](value, at, out)
    if "ssrf_env_variables" not in found:
        out.set("auth.token", "env:" + ",".join(AWS_TOKEN_ENV))  # AWS's agent's default, not this agent's
    if "enabled" in found and found["enabled"][1] is False:
        out.bad(found["enabled"][0], "false turns the Secrets Manager agent off; this agent has nothing else to serve")
    return out.raw


def _table(value: Any, at: str, out: _Out) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    out.bad(at, "expected a table")
    return None


def _collect_nested(data: Mapping[str, Any], found: dict[str, tuple[str, Any]], out: _Out) -> None:
    def take(table: dict[str, Any], prefix: str, keys: frozenset[str], subtables: frozenset[str] = frozenset()) -> None:
        for key, value in table.items():
            if key in subtables:
                continue
            if key in keys:
                found[key] = (f"{prefix}.{key}", value)
            else:
                out.bad(f"{prefix}.{key}", "unknown key of AWS's agent's configuration")

    if "logging" in data and (logging := _table(data["logging"], "logging", out)) is not None:
        take(logging, "logging", frozenset({"log_level", "log_to_file"}))
    capabilities = _table(data.get("capabilities", {}), "capabilities", out) or {}
    for name in capabilities:
        if name != "secrets_manager":
            out.bad(f"capabilities.{name}", "not supported: this agent serves Secrets Manager only")
    sm = _table(capabilities.get("secrets_manager", {}), NESTED, out) or {}
    sections = {
        "cache": frozenset({"ttl_seconds", "cache_size"}),
        "security": frozenset({"ssrf_headers", "ssrf_env_variables"}),
        "prefetch": frozenset({"cache_buffer_ratio", "max_jitter_seconds", "secrets", "filter_tags"}),
    }
    own = frozenset(k for k, path in _NESTED_PATHS.items() if path == f"{NESTED}.{k}")
    take(sm, NESTED, own, frozenset(sections))
    for name, keys in sections.items():
        if name in sm and (table := _table(sm[name], f"{NESTED}.{name}", out)) is not None:
            take(table, f"{NESTED}.{name}", keys)


def _number(value: Any, at: str, out: _Out, low: int, high: int) -> int | None:
    """AWS's agent's numbers: an integer, or (1.x) a string of digits; in its own range."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        out.bad(at, f"expected a whole number, got {value!r}")
        return None
    if not low <= value <= high:
        out.bad(at, f"{value} is out of AWS's agent's range {low}..{high}")
        return None
    return value


def _boolean(value: Any, at: str, out: _Out) -> bool | None:
    if isinstance(value, bool):
        return value
    out.bad(at, f"expected true or false, got {value!r}")
    return None


def _names(value: Any, at: str, out: _Out) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(item, str) and item.strip() for item in value):
        return [item.strip() for item in value]
    out.bad(at, f"expected a non-empty list of names, got {value!r}")
    return None


def _log_level(value: Any, at: str, out: _Out) -> None:
    level = value.strip().lower() if isinstance(value, str) else None
    levels = {"debug": "debug", "info": "info", "warn": "warning", "error": "error", "none": "error"}
    if level not in levels:
        out.bad(at, f"expected one of DEBUG, INFO, WARN, ERROR, NONE, got {value!r}")
        return
    out.set("log.level", levels[level])
    if level == "none":
        out.differs(at, value, '→ log.level = "error"', "this agent cannot turn logging off; errors are still logged")


def _log_to_file(value: Any, at: str, out: _Out) -> None:
    if _boolean(value, at, out):
        out.differs(
            at,
            value,
            "is not mapped",
            "this agent logs to stdout (JSON lines), never to a file; let the service manager keep them",
        )


def _http_address(value: Any, at: str, out: _Out) -> None:
    if isinstance(value, str) and value.strip():
        out.set("server.http_host", value.strip())
    else:
        out.bad(at, f"expected an IPv4 address, got {value!r}")


def _http_port(value: Any, at: str, out: _Out) -> None:
    if value == 0:
        out.bad(at, "0 (no TCP listener) is not supported: this agent always listens on TCP")
    elif (port := _number(value, at, out, 1024, 65535)) is not None:
        out.set("server.http_port", port)


def _path_prefix(value: Any, at: str, out: _Out) -> None:
    if isinstance(value, str):
        out.set("server.path_prefix", value)  # checked (and named) as server.path_prefix by the loader
    else:
        out.bad(at, f"expected a path such as '/v1/', got {value!r}")


def _max_conn(value: Any, at: str, out: _Out) -> None:
    if (count := _number(value, at, out, 1, 1000)) is not None:
        out.set("server.max_connections", count)


def _max_roles(value: Any, at: str, out: _Out) -> None:
    if (count := _number(value, at, out, 1, 20)) is not None:
        out.set("aws.max_roles", count)  # the same meaning: distinct roleArn values, agent-wide


def _region(value: Any, at: str, out: _Out) -> None:
    if isinstance(value, str) and value.strip():
        out.set("aws.region", value.strip())
    else:
        out.bad(at, f"expected a region name such as 'us-east-1', got {value!r}")


def _ignore_transient_errors(value: Any, at: str, out: _Out) -> None:
    flag = _boolean(value, at, out)
    if flag is True:
        out.set("cache.max_stale_seconds", 86_400)
        out.differs(
            at,
            value,
            "→ cache.max_stale_seconds = 86400",
            "on a transient upstream error the cached value is served for at most a day past its TTL "
            "(AWS's agent: without bound)",
        )
    elif flag is False:
        out.set("cache.max_stale_seconds", 0)
        out.differs(
            at,
            value,
            "→ cache.max_stale_seconds = 0",
            "a transient upstream error reaches the reader once the TTL is past; "
            "a start-up credential check still fails on it as on any error",
        )


def _validate_credentials(value: Any, at: str, out: _Out) -> None:
    if (flag := _boolean(value, at, out)) is not None:
        out.set("aws.validate_credentials", flag)


def _credentials_file_path(value: Any, at: str, out: _Out) -> None:
    out.bad(at, "not supported: set AWS_SHARED_CREDENTIALS_FILE in the agent's environment instead")


def _ttl_seconds(value: Any, at: str, out: _Out) -> None:
    if (ttl := _number(value, at, out, 0, 3600)) is not None:
        out.set("cache.ttl_seconds", ttl)


def _cache_size(value: Any, at: str, out: _Out) -> None:
    if (size := _number(value, at, out, 1, 1000)) is not None:
        out.set("cache.max_entries", size)
        out.differs(
            at,
            value,
            f"→ cache.max_entries = {size}",
            "this agent counts cached secret versions (a secret read by stage and by version id counts twice), "
            "AWS's agent counts secrets",
        )


def _ssrf_headers(value: Any, at: str, out: _Out) -> None:
    if (names := _names(value, at, out)) is not None:
        out.set("auth.headers", names)


def _ssrf_env_variables(value: Any, at: str, out: _Out) -> None:
    names = _names(value, at, out)
    if names is None:
        return
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            out.bad(at, f"{name!r} is not an environment variable name")
            return
    spec = "env:" + ",".join(names)
    out.set("auth.token", spec)
    out.differs(
        at,
        value,
        f"→ auth.token = {_toml_value(spec)}",
        "the first variable set and non-empty is read once at start (a file:// value names a token file, "
        "re-read when it changes); AWS's agent also takes a variable set but empty",
    )


def _prefetch_tuning(value: Any, at: str, out: _Out) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        out.bad(at, f"expected a number, got {value!r}")
        return
    out.differs(
        at,
        value,
        "is not mapped",
        "this agent keeps prefetched secrets fresh by polling them every refresh.interval_seconds (30 s), "
        "not by refetching before the TTL ends",
    )


def _entries(value: Any, at: str, out: _Out, id_key: str) -> list[str] | None:
    """``[{secret_id = ...}, ...]`` (or ``{key = ...}``): the ids; a ``role_arn`` is refused."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        out.bad(at, f"expected a list of tables with {id_key}")
        return None
    ids: list[str] = []
    for index, item in enumerate(value):
        for key in item:
            if key == "role_arn":
                out.bad(f"{at}[{index}].role_arn", "not supported: prefetch reads with aws.role_arn (or the default)")
            elif key != id_key:
                out.bad(f"{at}[{index}].{key}", "unknown key of AWS's agent's configuration")
        ident = item.get(id_key)
        if not isinstance(ident, str) or not ident.strip():
            out.bad(f"{at}[{index}].{id_key}", "needs a non-empty string")
        else:
            ids.append(ident.strip())
    return ids


def _prefetch_secrets(value: Any, at: str, out: _Out) -> None:
    if (ids := _entries(value, at, out, "secret_id")) is not None:
        out.set("prefetch.secrets", ids)


def _prefetch_tags(value: Any, at: str, out: _Out) -> None:
    if (keys := _entries(value, at, out, "key")) is not None:
        out.set("prefetch.tags", keys)


def _enabled(value: Any, at: str, out: _Out) -> None:
    _boolean(value, at, out)  # false is refused by translate(), once


_MAPPERS: dict[str, Callable[[Any, str, _Out], None]] = {
    "log_level": _log_level,
    "log_to_file": _log_to_file,
    "http_address": _http_address,
    "enabled": _enabled,
    "http_port": _http_port,
    "path_prefix": _path_prefix,
    "max_conn": _max_conn,
    "max_roles": _max_roles,
    "region": _region,
    "ignore_transient_errors": _ignore_transient_errors,
    "validate_credentials": _validate_credentials,
    "credentials_file_path": _credentials_file_path,
    "ttl_seconds": _ttl_seconds,
    "cache_size": _cache_size,
    "ssrf_headers": _ssrf_headers,
    "ssrf_env_variables": _ssrf_env_variables,
    "cache_buffer_ratio": _prefetch_tuning,
    "max_jitter_seconds": _prefetch_tuning,
    "secrets": _prefetch_secrets,
    "filter_tags": _prefetch_tags,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def to_toml(raw: Mapping[str, Mapping[str, Any]], order: Mapping[str, Mapping[str, Any]]) -> str:
    """``raw`` as native TOML text, sections and keys in ``order``'s (the schema's) order."""
    lines: list[str] = []
    for section, keys in order.items():
        values = raw.get(section)
        if not values:
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(values[key])}" for key in keys if key in values)
        lines.append("")
    return "\n".join(lines)
