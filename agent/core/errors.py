"""The agent's one exception tree.

Third-party errors (botocore, aiohttp, OS) are translated into these at the
module that meets them; nothing outside ``agent.upstream`` sees a botocore
exception. Every class carries its AWS-style ``code`` (the ``__type`` of the
JSON error body) and its HTTP ``status`` as class attributes; an instance is
never changed after it is raised. The one exception: an :class:`UpstreamError`
keeps the code AWS itself sent (``DecryptionFailure``, ``ExpiredTokenException``…),
given when it is created, because the HTTP API promises to pass it through.
The CLI maps classes to exit codes in one table (``agent.cli.exit_codes``).

::

    AgentError                       500 InternalFailure
    ├── ConfigError                  bad settings: names every offending key
    ├── CredentialsError             AWS credentials missing or rejected at start
    ├── ListenerError                a port or socket path could not be opened
    ├── EmulatorError                moto_server missing or did not start (dev)
    ├── TemplateError                a template could not be rendered
    ├── AuditUnavailable             503 a read refused: its audit record cannot be written
    ├── RequestError                 400 the caller's request is wrong
    │   ├── BadRequest               400 malformed / unknown parameter
    │   ├── Forbidden                403 missing or wrong token, or denied by policy
    │   ├── NotFound                 404 unknown path
    │   │   └── FieldNotFound        404 a JSON field the secret does not have
    │   ├── MethodNotAllowed         405 not a GET
    │   ├── PayloadTooLarge          413 a request body over the limit
    │   ├── RequestTimeout           408 a request body that does not arrive in time
    │   ├── TooManyConnections       429 connection limit
    │   ├── TooManyRequests          429 a client's rate_per_second
    │   └── ProtocolError            400 a bad Secrets Manager JSON-protocol request
    │       ├── ValidationError      ValidationException
    │       ├── SerializationError   SerializationException
    │       ├── UnknownOperation     UnknownOperationException
    │       └── SignatureError       SigV4 refused
    │           ├── IncompleteSignature   IncompleteSignatureException
    │           ├── InvalidSignature      InvalidSignatureException
    │           └── UnrecognizedClient    UnrecognizedClientException
    ├── UpstreamError                AWS said no, or could not be reached
    │   ├── SecretNotFound           404 ResourceNotFoundException
    │   ├── UpstreamDenied           403 AccessDeniedException
    │   ├── UpstreamThrottled        429 ThrottlingException (transient)
    │   ├── UpstreamRejected         400 any other client error (InvalidParameter…)
    │   ├── UpstreamUnavailable      502 connection refused/reset, 5xx (transient)
    │   │   └── UpstreamClosed       503 the agent is stopping: no more calls
    │   └── UpstreamTimeout          504 connect/read timeout (transient)
    └── ReadFailed                   get/wait/exec: the running agent did not give the value
        ├── AgentUnreachable         nothing answered on the socket or port
        ├── ReadNotFound             404 from the agent: no such secret or field
        ├── ReadDenied               403 from the agent: token or policy
        └── WaitTimedOut             the agent was not ready in time

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


class ListenerError(AgentError):
    """A listener could not be opened (port taken, socket path in use)."""


class EmulatorError(AgentError):
    """moto_server is not installed, or did not start."""


class TemplateError(AgentError):
    """A template could not be rendered (the message names the template, never a value)."""


class AuditUnavailable(AgentError):
    """A read refused because it cannot be audited (``[audit] on_failure = "deny"``)."""

    status = 503
    code = "AuditUnavailableException"


# ----------------------------------------------------------------------------- the caller's request


class RequestError(AgentError):
    """The caller's request cannot be served as asked."""

    status = 400
    code = "InvalidRequestException"


class BadRequest(RequestError):
    """A malformed request: unknown or missing parameter, bad value."""

    code = "InvalidParameterException"


class Forbidden(RequestError):
    """No valid token was presented, or a policy denies the read. One response for every case."""

    status = 403
    code = "AccessDeniedException"


class NotFound(RequestError):
    """Unknown path."""

    status = 404
    code = "ResourceNotFoundException"


class FieldNotFound(NotFound):
    """``?field=`` names a key the JSON secret does not have."""

    code = "FieldNotFoundException"


class MethodNotAllowed(RequestError):
    """Only GET is served (and POST on the SDK endpoint)."""

    status = 405
    code = "MethodNotAllowedException"


class PayloadTooLarge(RequestError):
    """A request body larger than the server accepts."""

    status = 413


class RequestTimeout(RequestError):
    """A request body that did not arrive within ``server.body_timeout_seconds``."""

    status = 408
    code = "RequestTimeoutException"


class TooManyConnections(RequestError):
    """The connection was opened while ``max_connections`` were already open."""

    status = 429
    code = "TooManyConnectionsException"


class TooManyRequests(RequestError):
    """The client exceeded its ``rate_per_second``."""

    status = 429
    code = "TooManyRequestsException"


class ProtocolError(RequestError):
    """A Secrets Manager JSON-protocol request (``POST /``) that cannot be served."""


class ValidationError(ProtocolError):
    """A parameter is missing or has the wrong form."""

    code = "ValidationException"


class SerializationError(ProtocolError):
    """The body is not a JSON object."""

    code = "SerializationException"


class UnknownOperation(ProtocolError):
    """An operation (or service) the agent does not serve."""

    code = "UnknownOperationException"


class SignatureError(ProtocolError):
    """The request's SigV4 signature cannot be accepted."""

    code = "InvalidSignatureException"


class IncompleteSignature(SignatureError):
    """The Authorization header or the request date is malformed or missing."""

    code = "IncompleteSignatureException"


class InvalidSignature(SignatureError):
    """The signature does not verify (wrong secret, tampering, expired, wrong scope)."""

    code = "InvalidSignatureException"


class UnrecognizedClient(SignatureError):
    """The access key id names no client with a token."""

    code = "UnrecognizedClientException"


# ----------------------------------------------------------------------------- upstream


class UpstreamError(AgentError):
    """AWS refused the call, or could not be reached.

    ``transient`` marks faults worth retrying later and worth hiding behind a
    cached value (throttling, 5xx, connection errors, timeouts). ``code`` is
    the class's unless AWS sent its own, which is kept as sent.
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
    """AWS throttled the agent."""

    status = 429
    code = "ThrottlingException"
    transient = True


class UpstreamRejected(UpstreamError):
    """Any other client-side error reported by AWS."""

    status = 400
    code = "InvalidRequestException"


class UpstreamUnavailable(UpstreamError):
    """Connection failure or a 5xx from AWS."""

    status = 502
    code = "ServiceUnavailable"
    transient = True


class UpstreamClosed(UpstreamUnavailable):
    """The agent is shutting down: no further upstream attempts are made (botocore retries included)."""

    status = 503
    code = "AgentShuttingDown"


class UpstreamTimeout(UpstreamError):
    """AWS did not answer in time."""

    status = 504
    code = "RequestTimeout"
    transient = True


# ----------------------------------------------------------------------------- the CLI's reads


class ReadFailed(AgentError):
    """``get``/``wait``/``exec``: the running agent answered a read with an error."""


class AgentUnreachable(ReadFailed):
    """Nothing answered on the agent's socket or port."""


class ReadNotFound(ReadFailed):
    """The agent answered 404: no such secret, or no such field."""


class ReadDenied(ReadFailed):
    """The agent answered 403: the token or a policy refuses this read."""


class WaitTimedOut(ReadFailed):
    """The agent did not become ready (with every named secret readable) in time."""
