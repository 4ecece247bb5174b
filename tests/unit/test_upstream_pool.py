"""The upstream worker pool: bounded, daemon threads, and closed for good at shutdown."""

from __future__ import annotations

import threading

import pytest

from agent.core.errors import UpstreamClosed
from agent.upstream.calls import UpstreamCalls
from agent.upstream.pool import DaemonPool
from tests.support.waiting import wait_until


async def test_calls_run_in_daemon_threads_and_stop_at_close() -> None:
    """Calls run in the pool's daemon threads (exit never waits for a long poll); after close() none start."""
    observed: list[tuple[str, str, str, bool]] = []
    calls = UpstreamCalls(max_workers=2, observe=lambda *outcome: observed.append(outcome))
    thread = await calls.call("Probe", threading.current_thread)
    assert thread.daemon and thread is not threading.main_thread()
    assert observed == [("Secrets Manager", "Probe", "ok", False)]
    calls.close()
    with pytest.raises(UpstreamClosed):
        await calls.call("Probe", threading.current_thread)


def test_pool_is_bounded_and_cancels_queued_work_on_shutdown() -> None:
    """No more than max_workers calls run at once; shutdown cancels what has not started."""
    pool = DaemonPool(2)
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(30)  # a hang guard: the test sets it
        with lock:
            running -= 1

    futures = [pool.submit(work) for _ in range(5)]
    wait_until(lambda: running >= 2, timeout=30, interval=0.01, message="two workers to start")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    for future in futures[:2]:
        future.result(timeout=5)
    assert peak == 2
    assert all(future.cancelled() for future in futures[2:])
    with pytest.raises(RuntimeError):
        pool.submit(work)
