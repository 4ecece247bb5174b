"""An agent inside the CLI's own process, for ``exec`` when no agent is running."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from agent.config import Settings
from agent.core.errors import AgentUnreachable
from agent.server.lifecycle import Started, serve

START_TIMEOUT_SECONDS = 30.0
READY_POLL_SECONDS = 0.05


@contextlib.asynccontextmanager
async def embedded_agent(settings: Settings) -> AsyncIterator[None]:
    """Serve ``settings`` in this process; ready (prefetch done) on entry, stopped on exit.

    An agent with no identity at all could serve nobody, the child included: when
    the configuration has neither ``auth.token`` nor ``[[clients]]``, the caller's
    own token (``--token-file``/``SECRETS_AGENT_TOKEN``) is its shared token.
    """
    if settings.auth.token is None and not settings.clients and settings.caller_token is not None:
        settings = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, token=settings.caller_token))
    started: asyncio.Future[Started] = asyncio.get_running_loop().create_future()
    agent = asyncio.create_task(serve(settings, on_started=started.set_result, install_signals=False))
    waiters: set[asyncio.Future[Any]] = {agent, started}
    await asyncio.wait(waiters, timeout=START_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agent
        raise AgentUnreachable("the embedded agent did not start")
    handle = started.result()
    try:
        while not handle.components.started.is_set():
            await asyncio.sleep(READY_POLL_SECONDS)
        yield
    finally:
        handle.stop.set()
        await agent
