"""The bounded pool of worker threads in which every blocking AWS call runs.

boto3 blocks, so its calls run in threads and the event loop only awaits them.
``ThreadPoolExecutor`` would do, except for one thing: since Python 3.9 the
interpreter joins its workers at exit, and a worker blocked in a 20 s SQS long
poll would then hold the process for up to 20 s after SIGTERM, after the agent
has already stopped serving. This pool's workers are *daemon* threads, so exit
never waits for a call nobody needs any more; shutdown cancels queued work.

Otherwise it behaves as ``ThreadPoolExecutor``: at most ``max_workers`` threads,
started on demand, an idle worker reused before a new one is started.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_WorkItem = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonPool(Executor):
    """An executor of at most ``max_workers`` daemon threads."""

    def __init__(self, max_workers: int, name: str = "aws") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._name = name
        self._numbers = itertools.count(1)
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue ``fn(*args, **kwargs)``; a worker runs it as soon as one is free."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the upstream pool is shut down")
            future: Future[T] = Future()
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._worker, name=f"{self._name}-{next(self._numbers)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever awaits the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs  # drop references before blocking again
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; cancel queued work if asked; optionally wait for running calls."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._threads:
                self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
