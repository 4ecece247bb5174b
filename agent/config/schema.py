"""Every ``[section] key`` the agent knows: its kind, default and range, stated once.

The names here are the public contract: what users write in the TOML file and
as ``SECRETS_AGENT_<SECTION>_<KEY>``. Arrays of tables (``[[clients]]``,
``[[secret_policies]]``, ``[[templates]]``) are validated by their own
modules and can only be written in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config import kinds
from agent.config.delivery import env_refs

DEFAULT_PORT = 2773  # AWS's agent and Lambda extension use it
DEFAULT_TOKEN_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
REFRESH_MODES = ("poll", "ttl")
ON_CHANGE = ("restart", "signal", "none")
AUDIT_ON_FAILURE = ("deny", "serve")
ARRAY_SECTIONS = ("clients", "secret_policies", "templates")


@dataclass(frozen=True)
class Key:
    """One setting: how to parse it and its default."""

    parse: kinds.Parser
    default: Any


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "http_host": Key(kinds.string, "127.0.0.1"),
        "http_port": Key(kinds.integer(0, 65535), DEFAULT_PORT),
        "unix_socket": Key(kinds.optional_string, None),
        "unix_socket_mode": Key(kinds.file_mode, 0o660),
        "max_connections": Key(kinds.integer(1, 10_000), 800),  # TCP
        "unix_max_connections": Key(kinds.integer(1, 10_000), 800),  # the Unix socket's own budget
        "unix_max_connections_per_uid": Key(kinds.integer(1, 10_000), 256),
        # Closed after this long with no request in progress (AWS's agent: 61 s per connection).
        "idle_timeout_seconds": Key(kinds.positive, 60.0),
        # A request whose headers (or body) have not fully arrived after this long is dropped.
        "header_timeout_seconds": Key(kinds.positive, 5.0),
        "body_timeout_seconds": Key(kinds.positive, 5.0),
        # Host header values accepted on TCP besides loopback names and addresses (DNS rebinding guard).
        "allowed_hosts": Key(kinds.string_list, ()),
        "allow_non_loopback": Key(kinds.boolean, False),
        # SIGTERM: in-flight requests get this long; systemd's TimeoutStopSec (20) and Kubernetes' 30 s are longer.
        "shutdown_grace_seconds": Key(kinds.positive, 10.0),
        "lock_memory": Key(kinds.boolean, False),  # mlockall at start (`run`): needs CAP_IPC_LOCK or LimitMEMLOCK
        # Where GET <prefix><secret-id> answers (AWS's agent's path_prefix); the route keeps the name "v1".
        "path_prefix": Key(kinds.path_prefix, "/v1/"),
        # Fresh cache hits answered below aiohttp (agent.server.fastpath); false: every request through aiohttp.
        "fast_path": Key(kinds.boolean, True),
    },
    "auth": {
        # env:NAME, env:A,B,C (the first set and non-empty; a value file://PATH names a token file), file:///path
        "token": Key(kinds.string, "env:AWS_TOKEN"),
        "headers": Key(kinds.string_list, DEFAULT_TOKEN_HEADERS),
    },
    "aws": {
        "region": Key(kinds.optional_string, None),
        "endpoint_url": Key(kinds.optional_string, None),
        "role_arn": Key(kinds.optional_string, None),
        "validate_credentials": Key(kinds.boolean, True),
        "read_timeout_seconds": Key(kinds.integer(1, 120), 10),
        "max_attempts": Key(kinds.integer(1, 10), 3),  # botocore "standard" retry mode's own default
        # Distinct roleArn values read with, for the whole agent (AWS's agent: 20); a new one past it is refused.
        "max_roles": Key(kinds.integer(0, 1000), 20),
    },
    "cache": {
        "ttl_seconds": Key(kinds.integer(0, 86_400), 300),  # AWS's agent's default TTL
        "max_entries": Key(kinds.integer(1, 1_000_000), 1000),
        "max_stale_seconds": Key(kinds.integer(0, 30 * 86_400), 86_400),
        # Past ttl_seconds, for this much longer, a read is answered at once while a revalidation runs;
        # later than that (a rarely read secret) the read waits for the revalidation (read deadline).
        "stale_while_revalidate_seconds": Key(kinds.integer(0, 86_400), 60),
        # How long a read waits for upstream before answering 504 (or the stale value).
        "read_deadline_seconds": Key(kinds.positive, 3.0),
        # How long a ResourceNotFoundException is answered without asking upstream again (0: off).
        "negative_ttl_seconds": Key(kinds.integer(0, 3600), 5),
    },
    "refresh": {
        "mode": Key(kinds.choice(*REFRESH_MODES), "poll"),
        "interval_seconds": Key(kinds.integer(1, 86_400), 30),
        # Parameter Store change detection (DescribeParameters versions), poll mode only.
        "parameter_interval_seconds": Key(kinds.integer(1, 86_400), 30),
    },
    "fleet": {
        # How many agents share this account and region (a hint: each plans with 1/size of the share).
        "size": Key(kinds.integer(1, 1_000_000), 1),
        # The fraction of each account-wide Secrets Manager quota the whole fleet may use
        # (the rest is for everything else in the account; see agent/cache/planner.py).
        "quota_share": Key(kinds.number(0.01, 1.0), 0.5),
    },
    "events": {
        "sqs_queue_url": Key(kinds.optional_string, None),
        "wait_time_seconds": Key(kinds.integer(1, 20), 20),  # SQS's longest long poll
        # SNS fan-out for a fleet: the agent makes its own queue, subscribed to this topic (agent.upstream.fanout).
        "sns_topic_arn": Key(kinds.optional_string, None),
        # Names of the queues it makes start with this (IAM can scope sqs:* to it; sweep-queues looks for it).
        "queue_prefix": Key(kinds.queue_prefix, "secrets-agent-"),
    },
    "prefetch": {
        "secrets": Key(kinds.string_list, ()),
        "name_prefixes": Key(kinds.string_list, ()),
        "tags": Key(kinds.tags, ()),
        "parameters": Key(kinds.string_list, ()),  # Parameter Store names (or ARNs)
        "parameter_paths": Key(kinds.string_list, ()),  # every parameter under these paths (recursive)
    },
    "log": {
        "level": Key(kinds.choice(*LOG_LEVELS), "info"),
        "format": Key(kinds.optional(kinds.choice(*LOG_FORMATS)), None),  # None: console on a TTY, else json
        # Routine successful requests are counted into one info line this often (and logged at debug);
        # 0: one info line per request. Errors, denials and reads that went upstream are logged at once.
        "summary_interval_seconds": Key(kinds.number(0, 86_400), 60.0),
        # Lines written at once per route, status and client in one summary interval; the rest are
        # counted into the summary (a caller looping on a wrong token does not flood the log). 0: no cap.
        "request_lines_per_interval": Key(kinds.integer(0, 1_000_000), 100),
    },
    "metrics": {
        "public": Key(kinds.boolean, False),
    },
    "audit": {
        "path": Key(kinds.optional_string, None),
        "on_failure": Key(kinds.choice(*AUDIT_ON_FAILURE), "deny"),  # deny: a read that cannot be audited is refused
    },
    "status": {
        # A scheduled rotation this late (or an AWSPENDING version this old) makes a secret overdue (failed).
        "rotation_grace_seconds": Key(kinds.integer(0, 30 * 86_400), 3600),
        # How often each cached secret's rotation health is assessed (no upstream calls of its own).
        "health_interval_seconds": Key(kinds.positive, 5.0),
        # At start, one ListSecretVersionIds per prefetched secret seeds its rotation history.
        "seed_history": Key(kinds.boolean, True),
        "history_per_secret": Key(kinds.integer(1, 1000), 50),
    },
    "exec": {
        "command": Key(kinds.argv, ()),
        "env": Key(env_refs, ()),
        "on_change": Key(kinds.choice(*ON_CHANGE), "restart"),
        "signal": Key(kinds.signal_name, "SIGHUP"),
        "grace_seconds": Key(kinds.positive, 10.0),
        "check_seconds": Key(kinds.positive, 2.0),
    },
}
