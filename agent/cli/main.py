"""Command line: ``secrets-agent {run,check-config,demo,audit,get,wait,exec,status,sweep-queues}``.

Each subcommand raises the agent's errors; :func:`main` turns them into exit
codes through the one table in :mod:`agent.cli.exit_codes`.
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
from agent.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exit_code
from agent.config import EnvRef, Settings, load_settings
from agent.config.loader import CALLER_TOKEN_FILE, native_equivalent
from agent.core import log as agent_log
from agent.core.errors import (
    AgentError,
    AgentUnreachable,
    CredentialsError,
    ReadDenied,
    ReadFailed,
    ReadNotFound,
    WaitTimedOut,
)
from agent.delivery.client import AgentClient

WAIT_POLL_SECONDS = 0.2
WAIT_REQUEST_TIMEOUT_SECONDS = 2.0

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
    "token_file": CALLER_TOKEN_FILE,
    "on_change": "exec.on_change",
    "signal": "exec.signal",
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


def _add_caller_flags(parser: argparse.ArgumentParser) -> None:
    _add_config_flags(parser)
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="a client's token to present (or SECRETS_AGENT_TOKEN); default: the shared auth.token",
    )


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
    _add_caller_flags(get)
    get.add_argument("secret_id", metavar="ID")
    get.add_argument("--field", help="one key of a JSON secret")
    get.add_argument("--stage", help="version stage (default AWSCURRENT)")
    wait = sub.add_parser("wait", help="block until the agent is ready (and the named secrets are cached)")
    _add_caller_flags(wait)
    wait.add_argument("--secrets", default="", help="comma-separated ids that must be readable")
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    execute = sub.add_parser("exec", help="run a command with secrets in its environment")
    _add_caller_flags(execute)
    execute.add_argument(
        "--env", action="append", default=[], metavar="NAME=ID[#FIELD]", help="repeatable; adds to [exec] env"
    )
    execute.add_argument("--on-change", choices=["restart", "signal", "none"], help="on rotation (default restart)")
    execute.add_argument("--signal", help="signal for --on-change signal (default SIGHUP; exec.signal)")
    execute.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    status = sub.add_parser("status", help="the agent's secrets, their rotation health and reads (exit 5: unhealthy)")
    _add_caller_flags(status)
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    status.add_argument("--interval", type=_positive_seconds, default=3.0, help="seconds between redraws (default 3)")
    sweep = sub.add_parser(
        "sweep-queues", help="delete SNS-mode queues and subscriptions that killed agents left behind"
    )
    _add_config_flags(sweep)
    sweep.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        help="a queue whose heartbeat is older is an orphan (default 1800: six missed heartbeats; under 600 warns)",
    )
    sweep.add_argument("--prefix", help="queue name prefix (default events.queue_prefix)")
    sweep.add_argument(
        "--topic-arn",
        action="append",
        default=[],
        metavar="ARN",
        help="also remove this topic's subscriptions whose queue is gone (repeatable; default events.sns_topic_arn)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    return parser


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items() if hasattr(args, flag)}
    caller = args.command in ("get", "wait", "exec", "status")
    return load_settings(
        args.config,
        overrides=overrides,
        stdout_is_tty=sys.stdout.isatty(),
        caller=caller,
        aws_only=args.command == "sweep-queues",
    )


def _prefetch_ids(settings: Settings) -> tuple[str, ...]:
    # Patterns can only be checked against an explicit list: prefixes and tags
    # select secrets nobody knows before the agent asks upstream.
    # Patterns match parameters too: listed parameters count, and paths select unknown ones.
    prefetch = settings.prefetch
    if prefetch.name_prefixes or prefetch.tags or prefetch.parameter_paths:
        return ()
    return (*prefetch.secrets, *prefetch.parameters)


def _audit_summary(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as fh:
            print(summarize(fh))
    except OSError as exc:
        print(f"secrets-agent: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _get(args: argparse.Namespace) -> int:
    reply = AgentClient(_settings(args)).value(args.secret_id, field=args.field, stage=args.stage)
    reply.raise_for_status(repr(args.secret_id))
    sys.stdout.buffer.write(reply.body)
    sys.stdout.buffer.flush()
    return EXIT_OK


def _wait(args: argparse.Namespace) -> int:
    client = AgentClient(_settings(args), timeout=WAIT_REQUEST_TIMEOUT_SECONDS)
    wanted = [part.strip() for part in args.secrets.split(",") if part.strip()]
    deadline = time.monotonic() + args.timeout
    last: ReadFailed = AgentUnreachable("nothing answered")
    while True:
        try:
            if client.get("/readyz").status == 200:
                for secret_id in wanted:
                    client.value(secret_id).raise_for_status(f"cannot read {secret_id!r}")
                return EXIT_OK
            last = WaitTimedOut("the agent is not ready")
        except (ReadNotFound, ReadDenied):
            raise  # waiting longer will not change the answer
        except ReadFailed as exc:  # unreachable, or a transient error: try again
            last = exc
        if time.monotonic() >= deadline:
            if isinstance(last, AgentUnreachable):
                raise last
            raise WaitTimedOut(f"timed out waiting for the agent ({last.message})")
        time.sleep(WAIT_POLL_SECONDS)


def _status(args: argparse.Namespace) -> int:
    from agent.cli.status import show

    terminal = sys.stdout.isatty()  # colour and redraw in place only on a terminal
    client = AgentClient(_settings(args))  # the default 10 s: a large agent's /status is megabytes
    return show(client, watch=args.watch, interval=args.interval, colour=terminal, clear=terminal)


def _exec(args: argparse.Namespace) -> int:
    from agent.cli.embedded import embedded_agent
    from agent.delivery.supervisor import run_exec
    from agent.server.hardening import harden_process

    settings = _settings(args)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    command = argv or list(settings.exec.command)
    if not command:
        print("secrets-agent: exec needs a command: secrets-agent exec --env NAME=ID -- cmd args", file=sys.stderr)
        return EXIT_USAGE
    try:
        extra = tuple(EnvRef.parse(text) for text in args.env)
    except ValueError as exc:
        print(f"secrets-agent: --env: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = dataclasses.replace(settings.exec, env=settings.exec.env + extra)
    agent_log.configure(settings.log.level, settings.log.format, stream=sys.stderr)
    # Not dumpable (execve makes the child dumpable again); RLIMIT_CORE is left alone: the child inherits it.
    harden_process(core_limit=False)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_exec(settings, command, spec, embedded_agent))


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # AWS's agent's file: the summary as TOML comments, then the equivalent native file (stdout is one TOML file).
    native = native_equivalent(settings.source) if settings.source else None
    note = "# " if native is not None else ""
    server = settings.server
    print(f"{note}configuration OK ({settings.source or 'defaults and environment'})")
    listeners = f"{server.http_host}:{server.http_port}"
    if server.unix_socket:
        listeners += f" and {server.unix_socket}"
    print(f"{note}  listens on {listeners}")
    token = settings.auth.token
    shared = f"shared token from {token.kind}:{token.location}" if token else "no shared token (clients only)"
    print(f"{note}  {shared}")
    print(f"{note}  {len(settings.clients)} clients, {len(settings.secret_policies)} secret policies")
    for warning in unused_patterns(settings.clients, settings.secret_policies, _prefetch_ids(settings)):
        print(f"warning: {warning}", file=sys.stderr)
    prefetch = settings.prefetch
    counts = f"{len(prefetch.secrets)} ids, {len(prefetch.name_prefixes)} prefixes, {len(prefetch.tags)} tags"
    print(f"{note}  prefetch: {counts}")
    if native is not None:
        print(f"# {settings.source} is AWS's agent's configuration; the same settings in this agent's format:\n")
        print(native, end="")
    return EXIT_OK


def _sweep_queues(args: argparse.Namespace) -> int:
    from agent.upstream.calls import UpstreamCalls
    from agent.upstream.fanout import HEARTBEAT_SECONDS
    from agent.upstream.session import build_clients, caller_identity
    from agent.upstream.sweep import DEFAULT_OLDER_THAN_SECONDS, MIN_OLDER_THAN_SECONDS, Sweeper

    settings = _settings(args)
    agent_log.configure(settings.log.level, settings.log.format, stream=sys.stderr)
    older_than = DEFAULT_OLDER_THAN_SECONDS if args.older_than is None else args.older_than
    if not older_than >= 0:  # NaN included
        print("secrets-agent: --older-than must be 0 or more seconds", file=sys.stderr)
        return EXIT_USAGE
    if older_than < MIN_OLDER_THAN_SECONDS:
        # A live agent is told from an orphan only by its heartbeat; below two of them a live queue may
        # go too. Allowed (an operator who knows the agents are gone, a test), but never silently.
        print(
            f"secrets-agent: warning: --older-than {older_than:g} is under two heartbeats "
            f"({MIN_OLDER_THAN_SECONDS:.0f} s; a live agent refreshes its queue's heartbeat "
            f"every {HEARTBEAT_SECONDS} s): "
            "a live agent's queue may be removed too (it then makes a new one, missing events meanwhile)",
            file=sys.stderr,
        )
    prefix = args.prefix or settings.events.queue_prefix
    topics = [*args.topic_arn, *([settings.events.sns_topic_arn] if settings.events.sns_topic_arn else [])]
    clients = build_clients(settings.aws, with_sqs=True, with_sns=True)
    calls = UpstreamCalls(max_workers=2)

    async def sweep() -> int:
        account = (await caller_identity(clients, calls))["account"]  # whose queues a dangling subscription names
        sweeper = Sweeper(
            clients.sqs, clients.sns, calls, prefix=prefix, region=clients.region, account=account, clock=time.time
        )
        report = await sweeper.sweep(older_than=older_than, topics=topics, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for url in report.queues_removed:
            print(f"{verb} queue {url}")
        for arn in report.subscriptions_removed:
            print(f"{verb} subscription {arn}")
        print(
            f"{verb} {len(report.queues_removed)} queues and {len(report.subscriptions_removed)} subscriptions; "
            f"kept {len(report.queues_kept)} live queues"
        )
        return EXIT_OK

    try:
        return asyncio.run(sweep())
    finally:
        calls.close()


def _run(args: argparse.Namespace) -> int:
    from agent.server.lifecycle import run  # imported late: check-config must not need uvloop/boto3 set up

    settings = _settings(args)
    agent_log.configure(settings.log.level, settings.log.format)
    run(settings)
    return EXIT_OK


COMMANDS = ("run", "check-config", "demo", "audit", "get", "wait", "exec", "status", "sweep-queues")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secrets-agent`` and ``python -m agent``; returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] not in (*COMMANDS, "-h", "--help"):
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
        if command == "status":
            return _status(args)
        if command == "sweep-queues":
            return _sweep_queues(args)
        if command == "demo":
            from agent.dev.demo import run_demo

            return run_demo(port=args.port, rotate_seconds=args.rotate_seconds)
        return _run(args)
    except AgentError as exc:
        print(f"secrets-agent: {_describe(exc)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_OK


def _describe(error: AgentError) -> str:
    """The one-line (or, for configuration, one-line-per-problem) message for stderr."""
    if isinstance(error, CredentialsError):
        return f"AWS credentials: {error}"
    if isinstance(error, AgentUnreachable):
        return f"agent unreachable: {error}"
    return str(error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
