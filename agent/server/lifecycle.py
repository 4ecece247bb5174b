"""Lifecycle: build the components, serve one app on TCP and a Unix socket, stop cleanly.

``serve()`` is the whole life of the agent inside an event loop; ``run()`` wraps
it in a uvloop ``asyncio.Runner``. On SIGTERM/SIGINT the listeners close, in-flight
requests get up to ``SHUTDOWN_GRACE_SECONDS`` to finish, background tasks are
cancelled and awaited, the socket file is removed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop
from aiohttp import web

from agent import __version__
from agent.access.audit import AuditLog
from agent.access.identity import Authenticator, RateLimiter
from agent.access.policy import Policy
from agent.cache.refresher import Refresher
from agent.cache.store import SecretCache
from agent.config import Settings
from agent.core.errors import AgentError
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.core.types import SecretValue
from agent.delivery.notify import Notifier
from agent.server.app import Components, create_app
from agent.server.middleware import ConnectionLimiter
from agent.upstream.events import EventListener
from agent.upstream.secretsmanager import SecretsManagerSource
from agent.upstream.session import MAX_POOL_CONNECTIONS, AwsClients, build_clients, caller_identity
from agent.upstream.throttle import AttemptPacer

log = get_logger("agent.server.lifecycle")

SHUTDOWN_GRACE_SECONDS = 10.0
KEEPALIVE_TIMEOUT_SECONDS = 75.0


@dataclass
class Started:
    """What a caller of :func:`serve` learns once the listeners are up."""

    tcp: tuple[str, int]
    unix_socket: str | None
    components: Components
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class ListenerError(AgentError):
    """A listener could not be opened (port taken, socket path in use)."""


def _prepare_socket_path(path: str) -> None:
    """Remove a stale socket file; refuse if something live listens there or it is not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenerError(f"server.unix_socket: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: a leftover from a crashed run
        log.info("stale_socket_removed", path=path)
        return
    finally:
        probe.close()
    raise ListenerError(f"server.unix_socket: another process is listening on {path}")


async def _start_unix(runner: web.AppRunner, path: str, mode: int) -> None:
    _prepare_socket_path(path)
    # aiohttp does not chmod the socket: bind under a tight umask so there is
    # no window in which it is world-accessible, then set the configured mode.
    previous = os.umask(0o177)
    try:
        await web.UnixSite(runner, path).start()
    finally:
        os.umask(previous)
    os.chmod(path, mode)


def reload(parts: Components) -> None:
    """SIGHUP: re-read token files now and reopen the audit file (after logrotate)."""
    log.info("reloading")
    parts.auth.reload()
    if parts.audit is not None:
        parts.audit.reopen()


def build_components(settings: Settings, clients: AwsClients) -> tuple[Components, SecretsManagerSource]:
    """Wire source, cache, refresher, events, auth and metrics from settings."""
    metrics = Metrics()
    audit = AuditLog(settings.audit.path)
    pacer = AttemptPacer()
    pacer.install(clients.secretsmanager)

    def observe_upstream(operation: str, outcome: str, transient: bool) -> None:
        metrics.observe_upstream(operation, outcome, transient)
        audit.upstream(operation, outcome, transient)

    follow_ups: set[asyncio.Task[None]] = set()
    renderer: list[Any] = []  # the TemplateRenderer, set below once the cache exists

    def on_rotation(value: SecretValue, old_version: str | None, how: str) -> None:
        if renderer:
            task = asyncio.get_running_loop().create_task(renderer[0].on_rotation(value.arn))
            follow_ups.add(task)
            task.add_done_callback(follow_ups.discard)
        metrics.rotations.labels(how).inc()
        audit.rotation(name=value.name, arn=value.arn, old_version=old_version, new_version=value.version_id, how=how)
        log.info(
            "rotation",
            secret_id=value.name,
            arn=value.arn,
            old_version=old_version,
            new_version=value.version_id,
            how=how,
        )

    source = SecretsManagerSource(clients.secretsmanager, max_workers=MAX_POOL_CONNECTIONS, observe=observe_upstream)
    cache = SecretCache(
        source,
        ttl_seconds=settings.cache.ttl_seconds,
        max_entries=settings.cache.max_entries,
        max_stale_seconds=settings.cache.max_stale_seconds,
        observe=metrics.observe_lookup,
        on_rotation=on_rotation,
    )
    if settings.templates:
        from agent.delivery.templates import TemplateRenderer  # Jinja2 only when templates are configured

        renderer.append(TemplateRenderer(settings.templates, cache))
    refresher = Refresher(
        source,
        cache,
        settings.prefetch,
        settings.refresh,
        max_stale_seconds=settings.cache.max_stale_seconds,
        metrics=metrics,
        on_rotation=on_rotation,
    )
    events = None
    if settings.events.sqs_queue_url and clients.sqs is not None:

        async def refresh_named(secret_ref: str) -> bool:
            return await refresher.refresh_secret(secret_ref, how="event")

        events = EventListener(
            clients.sqs,
            settings.events.sqs_queue_url,
            refresh_named,
            wait_seconds=settings.events.wait_time_seconds,
            metrics=metrics,
        )
    parts = Components(
        cache=cache,
        refresher=refresher,
        auth=Authenticator(settings.auth, settings.clients),
        metrics=metrics,
        limiter=ConnectionLimiter(settings.server.max_connections),
        metrics_public=settings.metrics.public,
        events=events,
        pacer=pacer,
        policy=Policy(settings.clients, settings.secret_policies),
        rates=RateLimiter(settings.clients),
        audit=audit,
        templates=renderer[0] if renderer else None,
        notifier=Notifier(settings.systemd) if settings.systemd.notify_socket else None,
    )
    return parts, source


async def serve(
    settings: Settings,
    *,
    on_started: Callable[[Started], Awaitable[None] | None] | None = None,
    install_signals: bool = True,
) -> None:
    """Run the agent until SIGTERM/SIGINT (or ``Started.stop`` is set)."""
    loop = asyncio.get_running_loop()
    log.info("starting", version=__version__, config=settings.source)
    for warning in settings.warnings:
        log.warning("config_warning", detail=warning)
    clients = build_clients(settings.aws, with_sqs=settings.events.sqs_queue_url is not None)
    if settings.aws.validate_credentials:
        identity = await loop.run_in_executor(None, caller_identity, clients)
        log.info("aws_identity", account=identity["account"], arn=identity["arn"], region=clients.region)
    parts, source = build_components(settings, clients)
    app = create_app(parts)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
    )
    await runner.setup()
    assert runner.server is not None
    parts.limiter.install(runner.server)
    server = settings.server
    socket_path = server.unix_socket
    bound_socket: str | None = None  # only ever unlink a socket this process created
    stop = asyncio.Event()
    try:
        try:
            await web.TCPSite(runner, server.http_host, server.http_port, reuse_address=True).start()
        except OSError as exc:
            raise ListenerError(f"cannot listen on {server.http_host}:{server.http_port}: {exc.strerror}") from exc
        if socket_path:
            await _start_unix(runner, socket_path, server.unix_socket_mode)
            bound_socket = socket_path
        tcp = next(addr for addr in runner.addresses if isinstance(addr, tuple))
        log.info("listening", http=f"{tcp[0]}:{tcp[1]}", unix_socket=socket_path, region=clients.region)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: reload(parts))
        started = Started(tcp=(tcp[0], tcp[1]), unix_socket=socket_path, components=parts, stop=stop)
        if on_started is not None:
            maybe = on_started(started)
            if maybe is not None:
                await maybe
        await stop.wait()
        log.info("shutting_down")
    finally:
        # Signal handlers stay installed until cleanup is over: a second
        # SIGTERM while draining must not kill the process mid-shutdown.
        await runner.cleanup()
        if parts.pacer is not None:
            parts.pacer.close()  # botocore retries still running in threads stop here
        source.close()
        if bound_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(bound_socket)
        if parts.audit is not None:
            parts.audit.close()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped")


def run(settings: Settings) -> None:
    """Serve on a uvloop event loop until stopped."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(serve(settings))
