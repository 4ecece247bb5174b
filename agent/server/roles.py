"""``roleArn`` reads: one source and one cache per IAM role, made on first use, bounded.

A read naming ``roleArn`` is decided in this order, before the secret itself:

1. not a well-formed IAM role ARN → 400 ``InvalidParameterException``
2. the caller may not name it (``[[clients]] roles``; the ``default`` client may
   name any) → 403 ``AccessDeniedException``, and no STS call
3. a role new to the agent while ``aws.max_roles`` roles are held → 400
   ``InvalidParameterException`` (roles are never evicted)
4. its first use: STS AssumeRole from the agent's own credentials; refused →
   403 ``AccessDeniedException``; STS unreachable, throttling or slow → the
   usual 502/429/504 (no answer within ``cache.read_deadline_seconds``), and
   the role holds no slot until an AssumeRole succeeds

Then the read goes through the role's own caches (a
:class:`~agent.cache.store.SecretCache` built like the agent's, one per region
as in :mod:`agent.server.regions`, kept fresh by their TTL: the refresher polls
only the agent's own cache), under the same policies as any read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agent.access.policy import Policy
from agent.core.errors import BadRequest, Forbidden, UpstreamDenied, UpstreamRejected, UpstreamTimeout
from agent.core.log import get_logger
from agent.server.regions import RegionalCaches
from agent.upstream.roles import valid_role_arn
from agent.upstream.source import SecretSource

log = get_logger("agent.roles")

OpenRole = Callable[[str], Awaitable[SecretSource]]
MakeCache = Callable[[SecretSource], RegionalCaches]


class RoleRegistry:
    """Role ARN → the cache that reads as that role; at most ``max_roles`` of them, agent-wide."""

    def __init__(
        self,
        *,
        max_roles: int,
        policy: Policy,
        make_cache: MakeCache,
        open_role: OpenRole | None = None,
        deadline_seconds: float | None = None,
    ) -> None:
        self._max = max_roles
        self._policy = policy
        self._make_cache = make_cache
        self._open_role = open_role
        self._deadline = deadline_seconds
        self._caches: dict[str, RegionalCaches] = {}
        self._opening: dict[str, asyncio.Task[RegionalCaches]] = {}
        self._stopped = False

    def __len__(self) -> int:
        return len(self._caches)

    @property
    def roles(self) -> list[str]:
        """The roles held (assumed at least once)."""
        return list(self._caches)

    async def caches_for(self, client: str, role_arn: str) -> RegionalCaches:
        """The role's cache for ``client``'s read, checked in the order of the module docstring."""
        if not valid_role_arn(role_arn):
            raise BadRequest("roleArn must be an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
        if not self._policy.allows_role(client, role_arn):
            raise Forbidden("this client may not read as the role given in roleArn")
        cache = self._caches.get(role_arn)
        if cache is not None:
            return cache
        if self._open_role is None:
            raise BadRequest("roleArn reads are not available in this agent")
        task = self._opening.get(role_arn)
        if task is None:
            if self._stopped:
                raise BadRequest("the agent is shutting down")
            if len(self._caches) + len(self._opening) >= self._max:
                raise BadRequest(f"too many distinct roleArn values: this agent reads as at most {self._max} roles")
            task = asyncio.create_task(self._open(role_arn), name=f"assume-role {role_arn}")
            self._opening[role_arn] = task
            task.add_done_callback(lambda done: self._opened(role_arn, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._deadline)
        except TimeoutError:
            raise UpstreamTimeout("STS did not answer AssumeRole in time") from None
        except (UpstreamDenied, UpstreamRejected) as exc:
            raise Forbidden(f"could not assume the role given in roleArn: {exc.code}") from exc

    async def _open(self, role_arn: str) -> RegionalCaches:
        assert self._open_role is not None
        source = await self._open_role(role_arn)
        log.info("role_assumed", role_arn=role_arn, roles=len(self._caches) + 1)
        return self._make_cache(source)

    def _opened(self, role_arn: str, task: asyncio.Task[RegionalCaches]) -> None:
        self._opening.pop(role_arn, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved even when every reader gave up waiting
        if error is None and not self._stopped:
            self._caches[role_arn] = task.result()
        elif error is not None:
            log.warning("role_not_assumed", role_arn=role_arn, error=getattr(error, "code", type(error).__name__))

    async def stop(self) -> None:
        """Shutdown: no new role; every role cache stops as the agent's does."""
        self._stopped = True
        opening = list(self._opening.values())
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        await asyncio.gather(*(cache.stop() for cache in self._caches.values()))
