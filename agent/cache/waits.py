"""How a cache's readers wait for upstream: at most the read deadline, and never past shutdown.

Both caches (secrets and parameters) start upstream calls as tasks of their
own, so a reader that gives up, or is cancelled, never cancels a call others
share. :class:`UpstreamWaits` owns those tasks: :meth:`bounded` waits for one
at most ``deadline`` seconds (then :class:`~agent.core.errors.UpstreamTimeout`)
and not at all once :meth:`stop` was called (then
:class:`~agent.core.errors.UpstreamClosed`, 503); :meth:`stop` cancels every
call still running and refuses new ones.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from agent.core.errors import UpstreamClosed, UpstreamTimeout

T = TypeVar("T")


class UpstreamWaits:
    """Owned upstream tasks, a read deadline, and the stop switch."""

    def __init__(self, deadline: float | None, *, service: str = "Secrets Manager") -> None:
        self._deadline = deadline
        self._service = service
        self._tasks: set[asyncio.Future[Any]] = set()
        self._stopping: asyncio.Future[None] | None = None

    def _signal(self) -> asyncio.Future[None]:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
        return self._stopping

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping is not None and self._stopping.done()

    def refuse_when_stopping(self) -> None:
        """Raise UpstreamClosed once stopping: no upstream call starts at shutdown."""
        if self.stopping:
            raise UpstreamClosed("the agent is shutting down")

    def own(self, task: asyncio.Future[T]) -> asyncio.Future[T]:
        """Track ``task`` so :meth:`stop` cancels it (it is forgotten when done)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def bounded(self, task: asyncio.Future[T]) -> T:
        """``task``'s result, waiting at most the deadline and not past :meth:`stop`.

        ``asyncio.wait`` never cancels what it waits for: giving up leaves the
        call running for other readers and for the cache.
        """
        waiters: set[asyncio.Future[Any]] = {task, self._signal()}
        await asyncio.wait(waiters, timeout=self._deadline, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled():
            return task.result()
        if self.stopping or task.cancelled():  # only stop() cancels an owned call
            raise UpstreamClosed("the agent is shutting down")
        raise UpstreamTimeout(f"{self._service} did not answer within the read deadline ({self._deadline:g} s)")

    async def stop(self) -> None:
        """Readers stop waiting at once; calls still running are cancelled (their threads are abandoned)."""
        signal = self._signal()
        if not signal.done():
            signal.set_result(None)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
