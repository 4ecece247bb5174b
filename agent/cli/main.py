"""Command line: ``secrets-agent {run,check-config,demo,audit,get,wait,exec}``.

Exit codes scripts can rely on:

====  =====================================================
0     clean exit (or configuration valid, secret printed, agent ready)
1     unexpected failure
2     invalid configuration or usage (every problem listed)
3     run: AWS credentials missing or rejected
4     run: a listener could not be opened (port taken, socket in use)
10    get/wait/exec: secret not found (or JSON field absent)
11    get/wait/exec: access denied (token or policy)
12    get/wait/exec: agent unreachable
13    get/wait/exec: other error reported by the agent (upstream, bad request)
14    wait: timed out before the agent was ready
====  =====================================================

``exec`` otherwise exits with its child's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import uvloop

from agent.access.audit import summarize
from agent.access.policy import unused_patterns
from agent.config import Settings, load_settings
from agent.config.delivery import EnvRef
from agent.core import log as agent_log
from agent.core.errors import AgentError, ConfigError, CredentialsError
from agent.delivery.client import AgentClient, AgentUnreachable, Reply

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_CREDENTIALS = 3
EXIT_LISTENER = 4
EXIT_NOT_FOUND = 10
EXIT_DENIED = 11
EXIT_UNREACHABLE = 12
EXIT_AGENT_ERROR = 13
EXIT_TIMEOUT = 14
CLIENT_CODES = {
    "not_found": EXIT_NOT_FOUND,
    "denied": EXIT_DENIED,
    "unreachable": EXIT_UNREACHABLE,
    "error": EXIT_AGENT_ERROR,
}

# CLI flag → dotted config key. CLI beats env beats file beats defaults.
_FLAG_KEYS = {
    "http_host": "server.http_host",
    "http_port": "server.http_port",
    "unix_socket": "server.unix_socket",
    "region": "aws.region",
    "endpoint_url": "aws.endpoint_url",
    "role_arn": "aws.role_arn",
    "log_level": "log.level",
    "log_format": "log.format",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="TOML config file (or SECRETS_AGENT_CONFIG)")
    parser.add_argument("--http-host", metavar="HOST", help="TCP listen address (server.http_host)")
    parser.add_argument("--http-port", metavar="PORT", help="TCP port (server.http_port, default 2773)")
    parser.add_argument("--unix-socket", metavar="PATH", help="also listen on this Unix socket")
    parser.add_argument("--region", help="AWS region (aws.region)")
    parser.add_argument("--endpoint-url", metavar="URL", help="Secrets Manager/STS endpoint (aws.endpoint_url)")
    parser.add_argument("--role-arn", metavar="ARN", help="IAM role to assume (aws.role_arn)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["json", "console"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="secrets-agent",
        description="Secrets Manager sidecar agent: caches secrets and serves them on loopback.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the agent (default)")
    _add_config_flags(run)
    check = sub.add_parser("check-config", help="validate the configuration and exit")
    _add_config_flags(check)
    demo = sub.add_parser("demo", help="run the agent against a local moto server with sample secrets")
    demo.add_argument("--port", type=int, default=2773, help="agent TCP port (default 2773)")
    demo.add_argument("--rotate-seconds", type=float, default=30.0, help="rotate demo/api-key this often")
    audit = sub.add_parser("audit", help="summarise an audit file: reads per client and secret, denials, rotations")
    audit.add_argument("file", help="audit file ([audit] path)")
    get = sub.add_parser("get", help="print one secret's value, read through the running agent")
    _add_config_flags(get)
    get.add_argument("secret_id", metavar="ID")
    get.add_argument("--field", help="one key of a JSON secret")
    get.add_argument("--stage", help="version stage (default AWSCURRENT)")
    wait = sub.add_parser("wait", help="block until the agent is ready (and the named secrets are cached)")
    _add_config_flags(wait)
    wait.add_argument("--secrets", default="", help="comma-separated ids that must be readable")
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    execute = sub.add_parser("exec", help="run a command with secrets in its environment")
    _add_config_flags(execute)
    execute.add_argument(
        "--env", action="append", default=[], metavar="NAME=ID[#FIELD]", help="repeatable; adds to [exec] env"
    )
    execute.add_argument("--on-change", choices=["restart", "signal", "none"], help="on rotation (default restart)")
    execute.add_argument("--signal", help="signal for --on-change signal (default SIGHUP)")
    execute.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items()}
    return load_settings(args.config, overrides=overrides, stdout_is_tty=sys.stdout.isatty())


def _prefetch_ids(settings: Settings) -> tuple[str, ...]:
    # Patterns can only be checked against an explicit list: prefixes and tags
    # select secrets nobody knows before the agent asks upstream.
    prefetch = settings.prefetch
    return () if prefetch.name_prefixes or prefetch.tags else prefetch.secrets


def _audit_summary(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as fh:
            print(summarize(fh))
    except OSError as exc:
        print(f"secrets-agent: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _client_exit(reply: Reply) -> int:
    if reply.status == 404:
        return EXIT_NOT_FOUND
    if reply.status == 403:
        return EXIT_DENIED
    return EXIT_AGENT_ERROR


def _get(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        reply = AgentClient(settings).value(args.secret_id, field=args.field, stage=args.stage)
    except AgentUnreachable as exc:
        print(f"secrets-agent: agent unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if reply.status != 200:
        print(f"secrets-agent: {reply.status} {reply.error_type()}", file=sys.stderr)
        return _client_exit(reply)
    sys.stdout.buffer.write(reply.body)
    sys.stdout.buffer.flush()
    return EXIT_OK


def _wait(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = AgentClient(settings, timeout=2.0)
    wanted = [part.strip() for part in args.secrets.split(",") if part.strip()]
    deadline = time.monotonic() + args.timeout
    last = EXIT_UNREACHABLE
    while True:
        try:
            if client.get("/readyz").status == 200:
                last = EXIT_OK
                for secret_id in wanted:
                    reply = client.value(secret_id)
                    if reply.status != 200:
                        last = _client_exit(reply)
                        break
                if last == EXIT_OK:
                    return EXIT_OK
                if last in (EXIT_NOT_FOUND, EXIT_DENIED):
                    print(f"secrets-agent: cannot read {secret_id!r}", file=sys.stderr)
                    return last
        except AgentUnreachable:
            last = EXIT_UNREACHABLE
        if time.monotonic() >= deadline:
            print("secrets-agent: timed out waiting for the agent", file=sys.stderr)
            return EXIT_TIMEOUT if last != EXIT_UNREACHABLE else EXIT_UNREACHABLE
        time.sleep(0.2)


def _exec(args: argparse.Namespace) -> int:
    from agent.delivery.supervisor import ResolveError, run_exec

    settings = _settings(args)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    command = argv or list(settings.exec.command)
    if not command:
        print("secrets-agent: exec needs a command: secrets-agent exec --env NAME=ID -- cmd args", file=sys.stderr)
        return EXIT_CONFIG
    try:
        extra = tuple(EnvRef.parse(text) for text in args.env)
    except ValueError as exc:
        print(f"secrets-agent: --env: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    spec = dataclasses.replace(
        settings.exec,
        env=settings.exec.env + extra,
        on_change=args.on_change or settings.exec.on_change,
        signal=args.signal or settings.exec.signal,
    )
    agent_log.configure(settings.log.level, settings.log.format, stream=sys.stderr)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_exec(settings, command, spec, CLIENT_CODES))
    except ResolveError as exc:
        print(f"secrets-agent: {exc}", file=sys.stderr)
        return exc.exit_code


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    server = settings.server
    print(f"configuration OK ({settings.source or 'defaults and environment'})")
    listeners = f"{server.http_host}:{server.http_port}"
    if server.unix_socket:
        listeners += f" and {server.unix_socket}"
    print(f"  listens on {listeners}")
    token = settings.auth.token
    print(f"  shared token from {token.kind}:{token.location}" if token else "  no shared token (clients only)")
    print(f"  {len(settings.clients)} clients, {len(settings.secret_policies)} secret policies")
    for warning in unused_patterns(settings.clients, settings.secret_policies, _prefetch_ids(settings)):
        print(f"warning: {warning}", file=sys.stderr)
    prefetch = settings.prefetch
    print(f"  prefetch: {len(prefetch.secrets)} ids, {len(prefetch.name_prefixes)} prefixes, {len(prefetch.tags)} tags")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from agent.server.lifecycle import run  # imported late: check-config must not need uvloop/boto3 set up

    settings = _settings(args)
    agent_log.configure(settings.log.level, settings.log.format)
    run(settings)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secrets-agent`` and ``python -m agent``; returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] not in ("run", "check-config", "demo", "audit", "get", "wait", "exec", "-h", "--help"):
        words.insert(0, "run")  # `secrets-agent --config F` means `secrets-agent run --config F`
    args = build_parser().parse_args(words)
    command = args.command
    try:
        if command == "check-config":
            return _check_config(args)
        if command == "audit":
            return _audit_summary(args)
        if command == "get":
            return _get(args)
        if command == "wait":
            return _wait(args)
        if command == "exec":
            return _exec(args)
        if command == "demo":
            from agent.dev.demo import run_demo

            return run_demo(port=args.port, rotate_seconds=args.rotate_seconds)
        return _run(args)
    except ConfigError as exc:
        print(f"secrets-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CredentialsError as exc:
        print(f"secrets-agent: AWS credentials: {exc}", file=sys.stderr)
        return EXIT_CREDENTIALS
    except AgentError as exc:
        from agent.server.lifecycle import ListenerError

        print(f"secrets-agent: {exc}", file=sys.stderr)
        return EXIT_LISTENER if isinstance(exc, ListenerError) else EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
