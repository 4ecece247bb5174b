"""File templates: render secrets into files for apps that read config files.

Each ``[[templates]]`` entry is Jinja2 in a *sandboxed* async environment with
one function, ``secret(id, field=None)``, which reads through the agent's own
cache (so templates follow rotation like every other reader); an id
``ssm:NAME`` reads a Parameter Store parameter (decrypted) through the
parameter cache, and re-renders when the refresher finds a new version. Rendering:

- happens after prefetch and before the agent reports ready, then again when a
  secret a template used rotates;
- writes atomically: a temp file in the destination's directory, ``fsync``,
  mode and owner set, ``rename`` over the destination, directory ``fsync``; a
  reader polling the file sees the old bytes or the new ones, never a mix;
- writes only when the rendered bytes differ from the file's, so unchanged
  secrets cause no reload; ``command`` runs once after each change.

A failing render (missing key with ``error_on_missing_key``, a template error,
an upstream error) keeps the previous file, is logged without values, and is
retried on the next rotation pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from agent.cache.parameters import ParameterCache
from agent.cache.rotations import Rotation
from agent.cache.store import SecretCache
from agent.config.delivery import TemplateSettings
from agent.core.errors import AgentError, TemplateError
from agent.core.log import get_logger
from agent.core.types import CURRENT
from agent.upstream.ssm import ParameterValue

SSM_PREFIX = "ssm:"  # secret("ssm:/app/db/host"): a Parameter Store name

log = get_logger("agent.delivery.templates")

COMMAND_TIMEOUT_SECONDS = 60.0


@dataclass
class _State:
    settings: TemplateSettings
    template: jinja2.Template
    arns: set[str] = field(default_factory=set)
    rendered: bool = False


def write_atomically(path: str, data: bytes, perms: int, uid: int = -1, gid: int = -1) -> None:
    """Replace ``path`` with ``data`` so that readers never see a partial file."""
    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix=".secrets-agent-", dir=directory)
    try:
        os.fchmod(fd, perms)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _ids(settings: TemplateSettings) -> tuple[int, int]:
    uid = gid = -1
    if settings.owner is not None:
        uid = int(settings.owner) if settings.owner.isdigit() else pwd.getpwnam(settings.owner).pw_uid
    if settings.group is not None:
        gid = int(settings.group) if settings.group.isdigit() else grp.getgrnam(settings.group).gr_gid
    return uid, gid


class TemplateRenderer:
    """Renders every configured template; re-renders those whose secrets rotate."""

    def __init__(
        self, templates: tuple[TemplateSettings, ...], cache: SecretCache, parameters: ParameterCache | None = None
    ) -> None:
        self._cache = cache
        self._parameters = parameters
        self._env = SandboxedEnvironment(enable_async=True, autoescape=False, keep_trailing_newline=True)
        self._states = []
        for settings in templates:
            text = settings.contents if settings.contents is not None else Path(settings.source or "").read_text()
            self._states.append(_State(settings, self._env.from_string(text)))
        self._lock = asyncio.Lock()
        self._commands: set[asyncio.Task[None]] = set()
        self._rerenders: set[asyncio.Task[None]] = set()

    @property
    def all_rendered(self) -> bool:
        """True once every template was rendered successfully at least once."""
        return all(state.rendered for state in self._states)

    async def render_all(self) -> None:
        """Render every template (writing only those whose bytes changed)."""
        async with self._lock:
            for state in self._states:
                await self._render(state)

    def on_rotation(self, rotation: Rotation) -> None:
        """Rotation subscriber: re-render, in a task this renderer owns, the templates that used the secret."""
        self.on_change(rotation.value.arn)

    def on_parameter_change(self, value: ParameterValue) -> None:
        """Parameter change subscriber: re-render the templates that used the parameter."""
        self.on_change(value.arn)

    def on_change(self, arn: str) -> None:
        """Re-render, in a task this renderer owns, the templates that used ``arn``."""
        task = asyncio.get_running_loop().create_task(self.rerender(arn))
        self._rerenders.add(task)
        task.add_done_callback(self._rerenders.discard)

    async def rerender(self, arn: str) -> None:
        """Re-render templates that used ``arn``, and retry ones that have not rendered yet."""
        async with self._lock:
            for state in self._states:
                if arn in state.arns or not state.rendered:
                    await self._render(state)

    async def _render(self, state: _State) -> None:
        try:
            await self._render_one(state)
        except Exception as exc:  # one template's failure must not stop the others or startup
            # The class name and destination only: the message could quote rendered text.
            log.error("template_failed", destination=state.settings.destination, error=type(exc).__name__)

    async def _render_one(self, state: _State) -> None:
        settings = state.settings
        used: set[str] = set()

        async def secret(secret_id: str, key: str | None = None) -> Any:
            if secret_id.startswith(SSM_PREFIX):
                return await parameter(secret_id, key)
            lookup = await self._cache.get(secret_id, CURRENT)
            used.add(lookup.value.arn)
            if key is None:
                if lookup.value.secret_string is None:
                    raise TemplateError(f"secret {secret_id!r} is binary; templates take string secrets")
                return lookup.value.secret_string
            fields = lookup.value.json_fields
            if fields is None or key not in fields:
                if settings.error_on_missing_key:
                    raise TemplateError(f"secret {secret_id!r} has no key {key!r}")
                return ""
            return fields[key]

        async def parameter(secret_id: str, key: str | None) -> Any:
            if self._parameters is None:
                raise TemplateError(f"{secret_id!r}: Parameter Store is not available here")
            lookup = await self._parameters.get(secret_id[len(SSM_PREFIX) :], decrypt=True)
            used.add(lookup.value.arn)
            if key is None:
                return lookup.value.value
            try:
                fields = json.loads(lookup.value.value)
            except ValueError:
                fields = None
            if not isinstance(fields, dict) or key not in fields:
                if settings.error_on_missing_key:
                    raise TemplateError(f"parameter {secret_id!r} has no key {key!r}")
                return ""
            return fields[key]

        try:
            text = await state.template.render_async(secret=secret)
        except (AgentError, jinja2.TemplateError) as exc:
            # Jinja's messages name variables and keys, not values.
            log.error("template_failed", destination=settings.destination, error=type(exc).__name__, reason=str(exc))
            return
        state.arns = used
        data = text.encode()
        try:
            with open(settings.destination, "rb") as fh:
                unchanged = fh.read() == data
        except OSError:
            unchanged = False
        if unchanged:
            os.chmod(settings.destination, settings.perms)
            state.rendered = True
            return
        uid, gid = _ids(settings)
        await asyncio.to_thread(write_atomically, settings.destination, data, settings.perms, uid, gid)
        state.rendered = True
        log.info("template_written", destination=settings.destination)
        if settings.command:
            task = asyncio.create_task(self._run_command(settings))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _run_command(self, settings: TemplateSettings) -> None:
        assert settings.command is not None
        process = await asyncio.create_subprocess_shell(
            settings.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        try:
            code = await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            code = -9
        log.info("template_command_done", destination=settings.destination, exit_code=code)

    async def close(self) -> None:
        """Shutdown: cancel re-renders not yet done, then wait for commands still running."""
        for task in list(self._rerenders):
            task.cancel()
        if self._rerenders:
            await asyncio.gather(*self._rerenders, return_exceptions=True)
        if self._commands:
            await asyncio.gather(*self._commands, return_exceptions=True)
