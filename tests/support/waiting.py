"""Wait for a condition with a deadline instead of sleeping a fixed time and hoping.

``check`` is called at once and then every ``interval`` seconds until it returns
something truthy, which is returned. Past ``timeout`` an :class:`AssertionError`
says what was awaited and the last result. An exception raised by ``check``
propagates at once: a check may fail fast (a process that exited, a bad status).

These bound how long a test waits; they never assert how fast something happened. Give
timeouts room (20-30 s where the happy path takes 1 s): CI runs on two shared cores.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Message = str | Callable[[], str] | None

DEFAULT_TIMEOUT = 30.0  # a hang guard, not a measurement: a loaded CI machine stalls loops and moto for seconds
DEFAULT_INTERVAL = 0.05


def _timed_out(check: Callable[[], object], message: Message, timeout: float, last: object) -> AssertionError:
    what = message() if callable(message) else message
    if what is None:
        what = f"{getattr(check, '__qualname__', repr(check))}() to return a true value"
    return AssertionError(f"waited {timeout:g}s for {what}; last result: {last!r}")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    message: Message = None,
) -> T:
    """Await until ``check()`` (sync or async) is truthy and return its result; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(check, message, timeout, result)
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    message: Message = None,
) -> T:
    """Block until ``check()`` is truthy and return its result; fail after ``timeout`` seconds (not on a loop)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _timed_out(check, message, timeout, result)
        time.sleep(interval)
