"""Settings: built once from defaults < TOML file < ``SECRETS_AGENT_*`` env < CLI.

This is the only module that reads the environment or the config file. Every
other component receives a frozen :class:`~agent.config.settings.Settings`.

Each key is declared once in :data:`~agent.config.schema.SCHEMA` with its kind,
default and range. Loading collects *every* problem (unknown key, wrong type,
out of range, unusable token source) and raises one
:class:`~agent.core.errors.ConfigError` naming them all, so a user fixes a file
in one pass rather than one error per restart.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agent.config import aws_agent
from agent.config.access import DEFAULT_CLIENT, TokenRef, parse_clients, parse_secret_policies, resolve_token
from agent.config.delivery import ExecSettings, parse_templates, systemd_from_env
from agent.config.kinds import EnvText, Problems, check
from agent.config.schema import ARRAY_SECTIONS, SCHEMA
from agent.config.settings import (
    AuditSettings,
    AuthSettings,
    AwsSettings,
    CacheSettings,
    EventsSettings,
    FleetSettings,
    LogSettings,
    MetricsSettings,
    PrefetchSettings,
    RefreshSettings,
    ServerSettings,
    Settings,
    StatusSettings,
)
from agent.core.errors import ConfigError

ENV_PREFIX = "SECRETS_AGENT_"
ENV_CONFIG_PATH = "SECRETS_AGENT_CONFIG"
# The token `get`/`wait`/`exec` present when it is not the shared auth.token (a named client's).
ENV_CALLER_TOKEN = "SECRETS_AGENT_TOKEN"
CALLER_TOKEN_FILE = "caller.token_file"  # the CLI's --token-file, as an override key
_RESERVED_ENV = frozenset({ENV_CONFIG_PATH, ENV_CALLER_TOKEN})


def load_settings(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    stdout_is_tty: bool = False,
    caller: bool = False,
    aws_only: bool = False,
) -> Settings:
    """Build :class:`Settings` from file, environment and CLI overrides.

    ``overrides`` maps dotted keys (``"server.http_port"``) to values from the
    command line. ``caller`` is for ``get``/``wait``/``exec``: given a caller
    token of its own (``--token-file``, ``SECRETS_AGENT_TOKEN``), a command need
    not resolve the shared ``auth.token``. ``aws_only`` is for commands that
    only call AWS (``sweep-queues``): no token need resolve. Raises :class:`ConfigError` listing
    every problem found.
    """
    env = dict(os.environ if environ is None else environ)
    problems: Problems = []
    raw: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}

    arrays: dict[str, Any] = {}
    warnings: list[str] = []  # an AWS-agent file's first: one per key whose meaning differs
    path = config_path or env.get(ENV_CONFIG_PATH)
    if path:
        _merge_file(path, raw, arrays, problems, warnings)
    _merge_env(env, raw, problems)
    caller_file: str | None = None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted == CALLER_TOKEN_FILE:
            caller_file = str(value)
            continue
        section, _, key = dotted.partition(".")
        raw[section][key] = value

    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {
            key: check(spec.parse, raw[section].get(key, spec.default), f"{section}.{key}", problems, spec.default)
            for key, spec in keys.items()
        }

    server = ServerSettings(**values["server"])
    _check_server(server, problems)
    clients = parse_clients(arrays.get("clients"), env, problems, warnings)
    templates = parse_templates(arrays.get("templates"), problems)
    policies = parse_secret_policies(arrays.get("secret_policies"), problems)
    # With [[clients]] (or a caller's own token) the shared token is optional:
    # only an explicitly set one must resolve.
    caller_token = _caller_token(caller_file, env, problems, warnings)
    token_problems: Problems = []
    token = resolve_token(values["auth"]["token"], env, token_problems, warnings)
    optional = bool(clients) or (caller and caller_token is not None)
    if not aws_only and (not optional or "token" in raw["auth"]):
        hint = "; or present a client's token with --token-file FILE or SECRETS_AGENT_TOKEN" if caller else ""
        problems.extend((key, reason + hint) for key, reason in token_problems)
    headers = tuple(h.strip() for h in values["auth"]["headers"])
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
    topic = values["events"]["sns_topic_arn"]
    if topic is not None:
        if not _is_sns_topic_arn(topic):
            problems.append(
                ("events.sns_topic_arn", f"expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got {topic!r}")
            )
        if queue is not None:
            problems.append(
                ("events.sns_topic_arn", "set either events.sqs_queue_url or events.sns_topic_arn, not both")
            )
    log_values = values["log"]
    if log_values["format"] is None:
        log_values["format"] = "console" if stdout_is_tty else "json"

    known = {client.name for client in clients} | ({DEFAULT_CLIENT} if token else set())
    for index, policy in enumerate(policies):
        for reader in (*policy.readers, *policy.deny):
            if reader not in known:
                warnings.append(f"secret_policies[{index}] names client {reader!r}, which does not exist")

    caller_token = caller_token or token

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
        fleet=FleetSettings(**values["fleet"]),
        clients=clients,
        secret_policies=policies,
        audit=AuditSettings(**values["audit"]),
        status=StatusSettings(**values["status"]),
        templates=templates,
        exec=ExecSettings(**values["exec"]),
        systemd=systemd_from_env(env),
        caller_token=caller_token,
        warnings=tuple(warnings),
        source=path,
    )


def _is_sns_topic_arn(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and parts[0] == "arn" and parts[2] == "sns" and all(parts[3:])


def _caller_token(path: str | None, env: Mapping[str, str], problems: Problems, warnings: list[str]) -> TokenRef | None:
    """The token the CLI presents when it is not the shared one: ``--token-file``, else ``SECRETS_AGENT_TOKEN``."""
    if path is not None:
        return resolve_token(f"file://{os.path.abspath(path)}", env, problems, warnings, key="--token-file")
    if env.get(ENV_CALLER_TOKEN, "").strip():
        return resolve_token(f"env:{ENV_CALLER_TOKEN}", env, problems, warnings, key=ENV_CALLER_TOKEN)
    return None


def native_equivalent(path: str) -> str | None:
    """Native TOML for AWS's agent's config file at ``path`` (every key it sets); None for a native file.

    Raises :class:`ConfigError` if the file cannot be read or translated.
    """
    problems: Problems = []
    data = _read_toml(path, problems)
    if data is None or not aws_agent.aws_agent_names(data):
        if problems:
            raise ConfigError(problems)
        return None
    raw = aws_agent.translate(data, problems, [])
    if problems:
        raise ConfigError(problems)
    return aws_agent.to_toml(raw, SCHEMA)


def _read_toml(path: str, problems: Problems) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        problems.append(("--config", f"file not found: {path}"))
    except OSError as exc:
        problems.append(("--config", f"cannot read {path}: {exc.strerror}"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(("--config", f"{path} is not valid TOML: {exc}"))
    return None


def _merge_file(
    path: str, raw: dict[str, dict[str, Any]], arrays: dict[str, Any], problems: Problems, warnings: list[str]
) -> None:
    data = _read_toml(path, problems)
    if data is None:
        return
    if foreign := aws_agent.aws_agent_names(data):
        native = [name for name in data if name in SCHEMA or name in ARRAY_SECTIONS]
        if native:
            problems.append(
                (
                    "--config",
                    f"{path} mixes AWS's agent's keys ({', '.join(foreign)}) with this agent's sections "
                    f"({', '.join(native)}); write one layout (secrets-agent check-config prints this agent's)",
                )
            )
            return
        for section, table in aws_agent.translate(data, problems, warnings).items():
            raw[section].update(table)
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


def _merge_env(env: Mapping[str, str], raw: dict[str, dict[str, Any]], problems: Problems) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _RESERVED_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        array = next((a for a in ARRAY_SECTIONS if rest == a or rest.startswith(a + "_")), None)
        if array is not None:
            problems.append((name, f"[[{array}]] can only be set in the config file"))
            continue
        section, _, key = rest.partition("_")
        if section not in SCHEMA or key not in SCHEMA[section]:
            problems.append((name, "unknown setting (expected SECRETS_AGENT_<SECTION>_<KEY>)"))
            continue
        raw[section][key] = EnvText(value)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_server(server: ServerSettings, problems: Problems) -> None:
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


def _check_aws(aws: AwsSettings, problems: Problems) -> None:
    if aws.endpoint_url is not None:
        parsed = urlparse(aws.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(("aws.endpoint_url", f"expected an http(s) URL, got {aws.endpoint_url!r}"))
    if aws.role_arn is not None and not (aws.role_arn.startswith("arn:") and ":role/" in aws.role_arn):
        problems.append(("aws.role_arn", f"expected an IAM role ARN, got {aws.role_arn!r}"))
