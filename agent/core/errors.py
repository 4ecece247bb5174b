"""The agent's one exception tree.

Third-party errors (botocore, aiohttp, OS) are translated into these at the
module that meets them; nothing outside ``source.py``/``aws.py`` sees a botocore
exception. Every error that can reach a client carries an AWS-style ``code``
(the ``__type`` of the JSON error body) and an HTTP ``status``.

::

    AgentError
    ├── ConfigError              bad settings: names every offending key, exit 2
    ├── CredentialsError         AWS credentials missing or rejected at start, exit 3
    ├── RequestError             the caller's request is wrong (4xx)
    │   ├── BadRequest           400 malformed / unknown parameter
    │   ├── Forbidden            403 missing or wrong token (one response for both)
    │   ├── NotFound             404 unknown path, or missing JSON field
    │   ├── MethodNotAllowed     405 not a GET
    │   ├── TooManyConnections   429 connection limit
    │   └── TooManyRequests      429 a client's rate_per_second
    └── UpstreamError            Secrets Manager said no, or could not be reached
        ├── SecretNotFound       404 ResourceNotFoundException
        ├── UpstreamDenied       403 AccessDeniedException
        ├── UpstreamThrottled    429 ThrottlingException (transient)
        ├── UpstreamRejected     400 any other client error (InvalidParameter…)
        ├── UpstreamUnavailable  502 connection refused/reset, 5xx (transient)
        └── UpstreamTimeout      504 connect/read timeout (transient)

Messages never contain a secret value or a token: they are built from ids,
codes and AWS's own error text (which does not carry values either).
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    status: int = 500
    code: str = "InternalFailure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AgentError):
    """Settings are invalid; ``problems`` lists ``(key, reason)`` for every one found."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        lines = [f"  {key}: {reason}" for key, reason in self.problems]
        super().__init__("invalid configuration:\n" + "\n".join(lines))


class CredentialsError(AgentError):
    """AWS credentials could not be found, or AWS rejected them."""


class RequestError(AgentError):
    """The caller's request cannot be served as asked."""

    status = 400
    code = "InvalidRequestException"


class BadRequest(RequestError):
    """A malformed request: unknown or missing parameter, bad value."""

    status = 400
    code = "InvalidParameterException"


class Forbidden(RequestError):
    """No valid token was presented. Same response whether missing or wrong."""

    status = 403
    code = "AccessDeniedException"


class NotFound(RequestError):
    """Unknown path, or a JSON field that the secret does not have."""

    status = 404
    code = "ResourceNotFoundException"


class MethodNotAllowed(RequestError):
    """Only GET is served."""

    status = 405
    code = "MethodNotAllowedException"


class TooManyConnections(RequestError):
    """The connection was opened while ``max_connections`` were already open."""

    status = 429
    code = "TooManyConnectionsException"


class TooManyRequests(RequestError):
    """The client exceeded its ``rate_per_second``."""

    status = 429
    code = "TooManyRequestsException"


class UpstreamError(AgentError):
    """Secrets Manager refused the call, or could not be reached.

    ``transient`` marks faults worth retrying later and worth hiding behind a
    cached value (throttling, 5xx, connection errors, timeouts).
    """

    status = 502
    code = "ServiceUnavailable"
    transient = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class SecretNotFound(UpstreamError):
    """The secret (or the asked version/stage) does not exist."""

    status = 404
    code = "ResourceNotFoundException"


class UpstreamDenied(UpstreamError):
    """The agent's AWS identity may not read this secret."""

    status = 403
    code = "AccessDeniedException"


class UpstreamThrottled(UpstreamError):
    """Secrets Manager throttled the agent."""

    status = 429
    code = "ThrottlingException"
    transient = True


class UpstreamRejected(UpstreamError):
    """Any other client-side error reported by Secrets Manager."""

    status = 400
    code = "InvalidRequestException"


class UpstreamUnavailable(UpstreamError):
    """Connection failure or a 5xx from Secrets Manager."""

    status = 502
    code = "ServiceUnavailable"
    transient = True


class UpstreamTimeout(UpstreamError):
    """Secrets Manager did not answer in time."""

    status = 504
    code = "RequestTimeout"
    transient = True
