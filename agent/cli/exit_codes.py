"""Exit codes scripts can rely on, and the one table mapping the agent's errors to them.

====  =====================================================
0     clean exit (or configuration valid, secret printed, agent ready)
1     unexpected failure
2     invalid configuration or usage (every problem listed)
3     run: AWS credentials missing or rejected
4     run: a listener could not be opened (port taken, socket in use)
5     status: a secret is overdue, failed or stale (the table was printed)
10    get/wait/exec: secret not found (or JSON field absent)
11    get/wait/exec: access denied (token or policy)
12    get/wait/exec: agent unreachable
13    get/wait/exec: other error reported by the agent (upstream, bad request)
14    wait: timed out before the agent was ready
====  =====================================================

``exec`` otherwise exits with its child's exit code.
"""

from __future__ import annotations

from agent.core.errors import (
    AgentError,
    AgentUnreachable,
    ConfigError,
    CredentialsError,
    ListenerError,
    ReadDenied,
    ReadFailed,
    ReadNotFound,
    WaitTimedOut,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 5  # not an error: `status` printed its table and something needs attention

# The most specific class wins: an error's class is looked up along its MRO.
EXIT_CODES: dict[type[AgentError], int] = {
    AgentError: EXIT_FAILURE,
    ConfigError: EXIT_USAGE,
    CredentialsError: 3,
    ListenerError: 4,
    ReadNotFound: 10,
    ReadDenied: 11,
    AgentUnreachable: 12,
    ReadFailed: 13,
    WaitTimedOut: 14,
}


def exit_code(error: AgentError) -> int:
    """The exit code for ``error``: that of its nearest class in :data:`EXIT_CODES`."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_FAILURE
