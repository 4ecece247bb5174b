"""``secrets-agent exec``: run a command with secrets in its environment, and follow rotation.

The secrets are resolved through the running agent (over its Unix socket or
TCP, with the configured token); when no agent answers, one is started inside
this process for as long as the child runs (the caller supplies it: the
delivery layer does not import the server). The values go into the *child's*
environment only: this process's own environment is never modified, and no
value is logged. The child never starts before every referenced secret
resolved.

While the child runs, the referenced secrets' versions are checked every
``check_seconds`` (the agent itself follows rotation, so this is a cheap local
read). On a change, ``on_change`` decides: ``restart`` (SIGTERM, up to
``grace_seconds``, SIGKILL, then start again with fresh values), ``signal``
(send ``signal``, e.g. SIGHUP, for apps that re-read config), or ``none``.
SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 are forwarded to the child; the
exit code is the child's (128 + signal number when a signal ended it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence

from agent.config import Settings
from agent.config.delivery import EnvRef, ExecSettings
from agent.core.errors import AgentUnreachable, ReadFailed
from agent.core.log import get_logger
from agent.delivery.client import AgentClient

log = get_logger("agent.exec")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# Runs an agent in this process while the body of the ``async with`` runs (it is ready on entry).
EmbeddedAgent = Callable[[Settings], contextlib.AbstractAsyncContextManager[None]]


def resolve(client: AgentClient, refs: Sequence[EnvRef]) -> dict[str, str]:
    """Fetch every referenced value; raise a :class:`~agent.core.errors.ReadFailed` on the first failure."""
    values: dict[str, str] = {}
    for ref in refs:
        reply = client.value(ref.secret_id, field=ref.field)
        reply.raise_for_status(f"{ref.name} ({ref.secret_id!r})")
        values[ref.name] = reply.body.decode("utf-8", errors="replace")
    return values


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """Owns the child process: start, forward signals, restart or signal on rotation."""

    def __init__(self, command: Sequence[str], spec: ExecSettings, client: AgentClient) -> None:
        self._command = list(command)
        self._spec = spec
        self._client = client
        self._child: asyncio.subprocess.Process | None = None
        self._restarting = False

    async def _start(self, values: dict[str, str] | None = None) -> None:
        if values is None:
            values = await asyncio.to_thread(resolve, self._client, self._spec.env)
        environment = {**os.environ, **values}  # a copy: our own environment stays clean
        self._child = await asyncio.create_subprocess_exec(*self._command, env=environment)
        log.info("exec_started", command=self._command[0], pid=self._child.pid, variables=sorted(values))

    async def _versions(self) -> dict[str, str | None]:
        ids = sorted({ref.secret_id for ref in self._spec.env})
        return {secret_id: await asyncio.to_thread(self._client.version, secret_id) for secret_id in ids}

    def _forward(self, sig: signal.Signals) -> None:
        if self._child is not None and self._child.returncode is None:
            self._child.send_signal(sig)

    async def _stop_child(self) -> None:
        child = self._child
        if child is None or child.returncode is not None:
            return
        child.terminate()
        try:
            await asyncio.wait_for(child.wait(), self._spec.grace_seconds)
        except TimeoutError:
            child.kill()
            await child.wait()

    async def _watch(self) -> None:
        known = await self._versions()
        while True:
            await asyncio.sleep(self._spec.check_seconds)
            current = await self._versions()
            if current == known or any(version is None for version in current.values()):
                continue  # unchanged, or the agent is briefly unavailable: keep the child as it is
            known = current
            log.info("exec_secret_changed", on_change=self._spec.on_change)
            if self._spec.on_change == "restart":
                self._restarting = True
                try:
                    values = await asyncio.to_thread(resolve, self._client, self._spec.env)
                except ReadFailed as exc:
                    # Keep the running child rather than stop it for values we cannot get.
                    log.warning("exec_restart_skipped", reason=exc.message)
                    known = {}
                    self._restarting = False
                    continue
                try:
                    await self._stop_child()
                    await self._start(values)
                finally:
                    self._restarting = False
            elif self._spec.on_change == "signal":
                self._forward(signal.Signals[self._spec.signal])

    async def run(self) -> int:
        """Start the child and supervise it; returns its exit code."""
        await self._start()
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._forward, sig)
        watcher = asyncio.create_task(self._watch()) if self._spec.on_change != "none" and self._spec.env else None
        try:
            while True:
                assert self._child is not None
                child = self._child
                code = await child.wait()
                if self._restarting or child is not self._child:
                    await asyncio.sleep(0.05)  # the watcher is replacing the child
                    continue
                log.info("exec_exited", exit_code=code)
                return _exit_code(code)
        finally:
            for sig in FORWARDED:
                loop.remove_signal_handler(sig)
            if watcher is not None:
                watcher.cancel()
                try:
                    await watcher
                except asyncio.CancelledError:
                    pass
                except Exception as exc:  # the child's exit code is the answer, not the watcher's failure
                    log.warning("exec_watch_failed", error=type(exc).__name__)
            await self._stop_child()


async def run_exec(
    settings: Settings, command: Sequence[str], spec: ExecSettings, embedded_agent: EmbeddedAgent
) -> int:
    """Resolve, run and supervise; run ``embedded_agent`` for the child's lifetime when none is running."""
    client = AgentClient(settings)
    try:
        await asyncio.to_thread(client.get, "/ping")
    except AgentUnreachable:
        log.info("exec_embedded_agent")
        async with embedded_agent(settings):
            return await Supervisor(command, spec, client).run()
    return await Supervisor(command, spec, client).run()
