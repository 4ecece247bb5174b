"""The one way the agent calls AWS: in the bounded pool, counted, logged, errors translated.

Secrets Manager, SQS and STS calls all go through :meth:`UpstreamCalls.call`:
the blocking boto3 call runs in the :class:`~agent.upstream.pool.DaemonPool`,
its outcome is reported to one observer (metrics and the audit trail's failure
bursts), a failure is logged once (``upstream_error``) and botocore's exception
is translated by :func:`translate` into the agent's tree. Nothing above this
layer sees a botocore exception. A ``NextToken``-paged API is walked with
:meth:`UpstreamCalls.pages`, one :meth:`~UpstreamCalls.call` per page.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from agent.core.errors import (
    SecretNotFound,
    UpstreamClosed,
    UpstreamDenied,
    UpstreamError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from agent.core.log import get_logger
from agent.upstream.pool import DaemonPool
from agent.upstream.throttle import THROTTLE_CODES

log = get_logger("agent.upstream")

T = TypeVar("T")
# (service, operation, "ok" or the error code, transient)
CallObserver = Callable[[str, str, str, bool], None]
SECRETS_MANAGER = "Secrets Manager"

DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)
SERVER_FAULT_CODES = frozenset({"InternalServiceError", "InternalFailure", "ServiceUnavailable"})


def translate(exc: BaseException, secret_id: str | None = None, service: str = SECRETS_MANAGER) -> UpstreamError:
    """Map a botocore exception (or anything a call raised) to the agent's error tree."""
    if isinstance(exc, UpstreamError):
        return exc  # raised by our own botocore hooks (the pacer after shutdown)
    about = f" for secret {secret_id!r}" if secret_id else ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        message = str(error.get("Message") or code)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ResourceNotFoundException":
            return SecretNotFound(message, code=code)
        if code in THROTTLE_CODES or status == 429:
            return UpstreamThrottled(message, code="ThrottlingException")
        if code in DENIED_CODES:
            return UpstreamDenied(message, code=code)
        if status >= 500 or code in SERVER_FAULT_CODES:
            return UpstreamUnavailable(f"{service} error{about}: {message}", code=code)
        return UpstreamRejected(message, code=code)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return UpstreamTimeout(f"{service} did not answer in time{about}")
    if isinstance(exc, NoCredentialsError):
        return UpstreamUnavailable("AWS credentials are unavailable", code="CredentialsUnavailable")
    if isinstance(exc, ParamValidationError):
        return UpstreamRejected(f"invalid parameter{about}: {exc}", code="InvalidParameterException")
    if isinstance(exc, BotoCoreError):
        return UpstreamUnavailable(f"cannot reach {service}{about}: {type(exc).__name__}")
    return UpstreamUnavailable(f"unexpected upstream failure{about}: {type(exc).__name__}")


def client_error(code: str | None, message: str | None, operation: str) -> ClientError:
    """A botocore ``ClientError`` for an error AWS reported inside a successful reply (batch ``Errors``)."""
    return ClientError({"Error": {"Code": code or "UnknownError", "Message": message or ""}}, operation)


class UpstreamCalls:
    """Runs blocking AWS calls in one bounded pool and reports every outcome."""

    def __init__(self, *, max_workers: int, observe: CallObserver | None = None) -> None:
        self._pool = DaemonPool(max_workers, name="aws")
        self._closed = False
        self._observe = observe or (lambda _service, _operation, _outcome, _transient: None)

    async def call(
        self,
        operation: str,
        fn: Callable[..., T],
        /,
        *,
        service: str = SECRETS_MANAGER,
        secret_id: str | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(**kwargs)`` in the pool; raises the translated :class:`~agent.core.errors.UpstreamError`."""
        if self._closed:
            raise UpstreamClosed("the agent is shutting down")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                # The pool cancelled this queued call at shutdown; the caller was not cancelled.
                raise UpstreamClosed("the agent is shutting down") from None
            raise
        except Exception as exc:  # every botocore failure is translated below
            error = translate(exc, secret_id, service)
            self._observe(service, operation, error.code, error.transient)
            log.warning(
                "upstream_error",
                service=service,
                operation=operation,
                secret_id=secret_id,
                error=error.code,
                transient=error.transient,
                reason=error.message,
            )
            raise error from exc
        self._observe(service, operation, "ok", False)
        return result

    async def pages(
        self,
        operation: str,
        fn: Callable[..., Any],
        /,
        *,
        service: str = SECRETS_MANAGER,
        secret_id: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Each page of a ``NextToken``-paged API: ``fn(**kwargs)``, then with each page's ``NextToken``.

        Every page is one :meth:`call` (same pool, observer and errors), made only when
        the caller asks for it: a caller that has what it needs ``break``s without the
        next call (wrap the iterator in :func:`contextlib.aclosing` to close it at once).
        It ends after the page with no ``NextToken``; a failed page raises.
        """
        token: str | None = None
        while True:
            paged = {"NextToken": token} if token else {}
            page: dict[str, Any] = await self.call(
                operation, fn, service=service, secret_id=secret_id, **kwargs, **paged
            )
            yield page
            token = page.get("NextToken")
            if not token:
                return

    def close(self) -> None:
        """Refuse new calls and cancel queued ones; a call already running is abandoned, not awaited."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
