"""Lifecycle: the one object that builds the agent, starts it, and stops it.

:class:`Agent` follows uvicorn's ``Server``: the constructor builds every
component from settings (no network), :meth:`Agent.startup` checks AWS
credentials, opens the listeners and starts the background tasks,
:meth:`Agent.shutdown` undoes all of it (listeners first, see below), and :meth:`Agent.serve` is
the whole life between two signals:

=============================================  ==============================================
startup                                        shutdown
=============================================  ==============================================
upstream pool, pacer, audit file (built)       STOPPING=1; reads waiting on upstream answered
listeners (TCP, Unix socket)                   (stale or 503); listeners closed, in-flight
                                               requests drained (nothing new can arrive)
background tasks (refresher, readiness,        tasks cancelled and awaited; template
events (SNS: the agent's own queue made and    re-renders and commands finished;
subscribed first), watchdog)                   SNS: subscription and queue deleted
                                               pacer refuses retries, pool cancels queued calls
                                               socket file removed, audit file closed
=============================================  ==============================================

Listeners close first, although they opened before the tasks started, so that
no request arrives (or starts a template re-render) while the parts it needs
are being stopped.

On SIGTERM/SIGINT in-flight requests get up to ``server.shutdown_grace_seconds``
(reads still waiting on upstream are answered, stale or 503, just before it
ends, never dropped); the process then exits 0, whatever upstream does: stuck
upstream calls are abandoned (their worker threads are daemons). :func:`serve` and :func:`run` are the entry points
the CLI, the demo and the tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvloop

from agent import __version__
from agent.access.audit import AuditLog, recorded_rotations
from agent.access.identity import Authenticator, RateLimiter
from agent.access.policy import Policy
from agent.cache.history import Change
from agent.cache.parameters import ParameterCache, ParameterRefresher
from agent.cache.planner import LIST_SECRET_VERSION_IDS, Planner
from agent.cache.refresher import Refresher
from agent.cache.rotations import Rotation, RotationFeed
from agent.cache.store import SecretCache
from agent.cache.watch import RotationWatch
from agent.config import Settings
from agent.core.log import get_logger
from agent.core.metrics import Metrics
from agent.delivery.notify import Notifier
from agent.server.app import create_app
from agent.server.connections import ConnectionGuard, fd_budget
from agent.server.context import Components
from agent.server.fastpath import FastPath
from agent.server.hardening import harden_process
from agent.server.listeners import start_tcp, start_unix
from agent.server.memory import release_free_memory
from agent.server.parameters import ParameterReader
from agent.server.protocol import AgentRunner
from agent.server.reader import SecretReader
from agent.server.regions import RegionalCaches
from agent.server.requestlog import RequestLog
from agent.server.roles import OpenRole, RoleRegistry
from agent.upstream.calls import SECRETS_MANAGER, UpstreamCalls
from agent.upstream.events import ROTATION_FAILURES, EventListener
from agent.upstream.fanout import FanoutQueue
from agent.upstream.health import UpstreamHealth
from agent.upstream.regions import RegionalClients
from agent.upstream.roles import RoleSessions
from agent.upstream.secretsmanager import SecretsManagerSource
from agent.upstream.session import MAX_POOL_CONNECTIONS, build_clients, caller_identity
from agent.upstream.source import SecretSource
from agent.upstream.ssm import ParameterReads, ParameterSource
from agent.upstream.throttle import AttemptPacer

log = get_logger("agent.lifecycle")

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names to recognise, not to bind
# Reads still waiting on upstream are answered this long before the shutdown grace ends.
READ_CUTOFF_MARGIN_SECONDS = 1.0


@dataclass
class Started:
    """What a caller of :func:`serve` learns once the listeners are up."""

    tcp: tuple[str, int]
    unix_socket: str | None
    components: Components
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def cache_bounds(settings: Settings, metrics: Metrics) -> dict[str, Any]:
    """The ``[cache]`` settings both caches (secrets and parameters) are built with."""
    cache = settings.cache
    return {
        "ttl_seconds": cache.ttl_seconds,
        "max_entries": cache.max_entries,
        "max_stale_seconds": cache.max_stale_seconds,
        "read_deadline_seconds": cache.read_deadline_seconds,
        "negative_ttl_seconds": cache.negative_ttl_seconds,
        "observe": metrics.observe_lookup,
    }


def make_cache(settings: Settings, source: SecretSource, rotations: RotationFeed, metrics: Metrics) -> SecretCache:
    """A :class:`SecretCache` over ``source`` with the ``[cache]`` settings (the agent's own, and each role's)."""
    return SecretCache(
        source,
        **cache_bounds(settings, metrics),
        stale_while_revalidate_seconds=settings.cache.stale_while_revalidate_seconds,
        rotations=rotations,
    )


def build_components(
    settings: Settings,
    source: SecretSource,
    *,
    metrics: Metrics,
    audit: AuditLog,
    open_role: OpenRole | None = None,
    home_region: str | None = None,
    parameter_source: ParameterReads | None = None,
) -> Components:
    """Wire cache, refresher, templates, identities, policies and rotation reporting around ``source``.

    ``open_role`` makes the source a ``roleArn`` read goes through (None: such
    reads are refused). With ``home_region``, reads by a full ARN in another
    region are cached apart, per region (:mod:`agent.server.regions`). No
    background task starts here and nothing touches the network: a test can
    build an app around a fake source with this alone.
    """
    rotations = RotationFeed()
    rotations.subscribe(lambda rotation: _report_rotation(rotation, metrics, audit))
    cache = make_cache(settings, source, rotations, metrics)
    planner = Planner(
        interval=settings.refresh.interval_seconds,
        fleet_size=settings.fleet.size,
        quota_share=settings.fleet.quota_share,
        # With events, polling is the backstop: it may stretch up to the TTL AWS's agent keeps values for.
        events=settings.events.sqs_queue_url is not None or settings.events.sns_topic_arn is not None,
        max_interval=settings.cache.ttl_seconds,
    )
    watch = make_watch(settings, cache, source, metrics, planner)
    rotations.subscribe(watch.observe)
    # Rotations seen through a role or another region are reported (metrics, audit, log) but drive no template.
    other_rotations = RotationFeed()
    other_rotations.subscribe(lambda rotation: _report_rotation(rotation, metrics, audit))
    policy = Policy(settings.clients, settings.secret_policies)
    parameters = _parameter_reader(settings, parameter_source, policy, metrics)

    def by_region(home: SecretCache, over: SecretSource) -> RegionalCaches:
        make = (lambda: make_cache(settings, over, other_rotations, metrics)) if home_region else None
        return RegionalCaches(home, make, home_region=home_region)

    templates = None
    if settings.templates:
        from agent.delivery.templates import TemplateRenderer  # Jinja2 only when templates are configured

        templates = TemplateRenderer(settings.templates, cache, parameters.cache if parameters else None)
        rotations.subscribe(templates.on_rotation)
        if parameters is not None:
            parameters.refresher.listeners.append(templates.on_parameter_change)
    refresher = Refresher(
        source,
        cache,
        settings.prefetch,
        settings.refresh,
        max_stale_seconds=settings.cache.max_stale_seconds,
        metrics=metrics,
        planner=planner,
    )
    return Components(
        cache=cache,
        refresher=refresher,
        reader=SecretReader(cache, policy, metrics, caches=by_region(cache, source), usage=watch.usage),
        auth=Authenticator(settings.auth, settings.clients),
        rates=RateLimiter(settings.clients),
        metrics=metrics,
        connections=ConnectionGuard(
            max_tcp=settings.server.max_connections,
            max_unix=settings.server.unix_max_connections,
            max_per_uid=settings.server.unix_max_connections_per_uid,
            idle_timeout=settings.server.idle_timeout_seconds,
            header_timeout=settings.server.header_timeout_seconds,
        ),
        body_timeout_seconds=settings.server.body_timeout_seconds,
        path_prefix=settings.server.path_prefix,
        request_log=RequestLog(
            metrics,
            summary_interval_seconds=settings.log.summary_interval_seconds,
            request_lines_per_interval=settings.log.request_lines_per_interval,
        ),
        allowed_hosts=allowed_hosts(settings),
        audit=audit,
        watch=watch,
        upstream=UpstreamHealth(on_burst=audit.upstream_burst),  # the audit trail records each burst
        metrics_public=settings.metrics.public,
        templates=templates,
        parameters=parameters,
        roles=RoleRegistry(
            max_roles=settings.aws.max_roles,
            policy=policy,
            make_cache=lambda over: by_region(make_cache(settings, over, other_rotations, metrics), over),
            open_role=open_role,
            deadline_seconds=settings.cache.read_deadline_seconds,
        ),
    )


def _parameter_reader(
    settings: Settings, source: ParameterReads | None, policy: Policy, metrics: Metrics
) -> ParameterReader | None:
    """Parameter Store reads: the cache (secret cache bounds), its refresher and the policy-checked reader."""
    if source is None:
        return None
    cache = ParameterCache(source, **cache_bounds(settings, metrics))
    refresher = ParameterRefresher(
        cache,
        names=settings.prefetch.parameters,
        paths=settings.prefetch.parameter_paths,
        interval_seconds=settings.refresh.parameter_interval_seconds,
        poll=settings.refresh.mode == "poll",
        metrics=metrics,
    )
    return ParameterReader(cache, refresher, policy, metrics)


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """``Host`` names accepted on TCP besides loopback ones; None accepts any.

    The listen address itself is always accepted. Bound to every address
    (``0.0.0.0``/``::``, which needs ``allow_non_loopback``) with no
    ``allowed_hosts`` listed, clients may use any of the machine's names, so
    the check is off: exposing the agent was the operator's explicit choice.
    """
    server = settings.server
    if server.http_host in WILDCARD_HOSTS and not server.allowed_hosts:
        return None
    return frozenset(host.lower() for host in (*server.allowed_hosts, server.http_host))


def _report_rotation(rotation: Rotation, metrics: Metrics, audit: AuditLog) -> None:
    value = rotation.value
    metrics.rotations.labels(rotation.how).inc()
    delay = rotation.delay_seconds()
    audit.rotation(
        name=value.name,
        arn=value.arn,
        old_version=rotation.old_version,
        new_version=value.version_id,
        how=rotation.how,
        delay_seconds=delay,
    )
    log.info(
        "rotation",
        secret_id=value.name,
        arn=value.arn,
        old_version=rotation.old_version,
        new_version=value.version_id,
        how=rotation.how,
        delay_seconds=round(delay, 3) if delay is not None else None,
    )


def make_watch(
    settings: Settings, cache: SecretCache, source: SecretSource, metrics: Metrics, planner: Planner
) -> RotationWatch:
    """The rotation watch over the agent's own cache, its history restored from the audit file if there is one.

    History seeding is spaced by ``planner``'s budget for ListSecretVersionIds (this agent's share of the quota).
    """
    status, refresh = settings.status, settings.refresh
    watch = RotationWatch(
        cache,
        source,
        metrics,
        grace_seconds=status.rotation_grace_seconds,
        interval_seconds=status.health_interval_seconds,
        # Poll mode promises a confirmation every interval: two missed passes mean upstream is failing.
        stale_after_seconds=2 * refresh.interval_seconds if refresh.mode == "poll" else None,
        seed_history=status.seed_history,
        # One agent's share of the API's quota (the [fleet] hint): seeding never throttles the account.
        seed_spacing_seconds=1 / planner.budget(LIST_SECRET_VERSION_IDS),
        # A reply per prefetched secret was parsed and dropped: hand the freed pages back (about 1 MiB at 1000).
        on_seeded=release_free_memory,
        history_per_secret=status.history_per_secret,
    )
    path = settings.audit.path
    if path is not None and path != "-":
        for record in recorded_rotations(path):
            watch.restore(
                record["arn"],
                Change(
                    record["new_version"],
                    record["old_version"],
                    record["seen_at"],
                    record["how"],
                    record["delay_seconds"],
                ),
            )
    return watch


class Agent:
    """The agent: built from settings, started, and stopped (listeners first, then the rest in reverse)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        topic = settings.events.sns_topic_arn
        events_on = settings.events.sqs_queue_url is not None or topic is not None
        # may refuse: nothing is open yet
        self.clients = build_clients(settings.aws, with_sqs=events_on, with_sns=topic is not None)
        # May refuse (ConfigError naming audit.path): a symlink, another owner's file, not a regular file.
        self.audit = AuditLog(settings.audit.path, metrics=self.metrics, on_failure=settings.audit.on_failure)
        # One worker per upstream HTTP connection, plus one for the SQS long poll.
        self.calls = UpstreamCalls(max_workers=MAX_POOL_CONNECTIONS + int(events_on), observe=self._observe_upstream)
        self.pacer = AttemptPacer()
        self.pacer.install(self.clients.secretsmanager)
        source = SecretsManagerSource(
            self.clients.secretsmanager,
            self.calls,
            regions=RegionalClients(self.clients.secretsmanager, self._client_in),
        )
        roles = RoleSessions(self.clients, settings.aws, self.calls, on_client=self.pacer.install)
        parameter_source = None
        # Parameter Store has its own quotas: its throttling must not pace Secrets Manager calls.
        self.ssm_pacer = AttemptPacer()
        if self.clients.ssm is not None:
            parameter_source = ParameterSource(self.clients.ssm, self.calls, on_client=self.ssm_pacer.install)
        self.components = build_components(
            settings,
            source,
            metrics=self.metrics,
            audit=self.audit,
            open_role=roles.open,
            home_region=self.clients.region,
            parameter_source=parameter_source,
        )
        self.events: EventListener | None = None
        if settings.events.sqs_queue_url is not None:
            self.events = self._listener(settings.events.sqs_queue_url)
        self.fanout: FanoutQueue | None = None
        if topic is not None:
            cache = self.components.cache
            self.fanout = FanoutQueue(
                self.clients.sqs,
                self.clients.sns,
                self.calls,
                topic,
                lambda: [(arn, cache.name_of(arn)) for arn in cache.arns()],
                prefix=settings.events.queue_prefix,
            )
        self.notifier = Notifier(settings.systemd)
        app = create_app(self.components)
        self.runner = AgentRunner(
            app,
            guard=self.components.connections,
            fast=FastPath(self.components) if settings.server.fast_path else None,
            request_log=self.components.request_log,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=settings.server.shutdown_grace_seconds,
            keepalive_timeout=settings.server.idle_timeout_seconds,
            # After a response, an unread request body is drained at most this long before the close.
            lingering_time=settings.server.body_timeout_seconds,
        )
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bound_socket: str | None = None  # only ever unlink a socket this process created

    def _listener(self, queue_url: str, *, owned: bool = False) -> EventListener:
        """An :class:`EventListener` on ``queue_url`` refreshing the agent's own cache (``owned``: its own queue)."""
        refresher, watch = self.components.refresher, self.components.watch

        async def refresh_named(secret_ref: str, event_name: str) -> bool:
            if event_name in ROTATION_FAILURES:
                arn = refresher.cached_arn(secret_ref)
                if arn is None:
                    return False
                watch.rotation_failed(arn)
            return await refresher.refresh_secret(secret_ref, how="event")

        return EventListener(
            self.clients.sqs,
            self.calls,
            queue_url,
            refresh_named,
            metrics=self.metrics,
            wait_seconds=self.settings.events.wait_time_seconds,
            owned=owned,
        )

    async def _listen(self, queue_url: str) -> None:
        await self._listener(queue_url, owned=True).run()

    def _client_in(self, region: str) -> Any:
        """The agent's Secrets Manager client for another region (cross-region ARNs), paced as the others."""
        assert self.clients.secretsmanager_in is not None
        client = self.clients.secretsmanager_in(region)
        self.pacer.install(client)
        return client

    def _observe_upstream(self, service: str, operation: str, outcome: str, transient: bool) -> None:
        self.metrics.observe_upstream(operation, outcome)
        if service == SECRETS_MANAGER:
            # Failure bursts are about the secrets' upstream; an SQS success must not end one.
            self.components.upstream.note(operation, outcome, transient)  # tells the audit trail of bursts

    # ------------------------------------------------------------------ startup

    async def startup(self) -> Started:
        """Check credentials, open the listeners, start the background tasks."""
        settings = self.settings
        log.info("starting", version=__version__, config=settings.source)
        for warning in settings.warnings:
            log.warning("config_warning", detail=warning)
        if settings.aws.validate_credentials:
            identity = await caller_identity(self.clients, self.calls)
            log.info("aws_identity", account=identity["account"], arn=identity["arn"], region=self.clients.region)
        needed, limit = fd_budget(settings.server.max_connections, settings.server.unix_max_connections)
        if limit != resource.RLIM_INFINITY and limit < needed:
            log.warning(
                "file_descriptors_short",
                needed=needed,
                limit=limit,
                detail="raise the open-files limit (systemd LimitNOFILE=, docker --ulimit nofile=) or lower "
                "server.max_connections / server.unix_max_connections, else a flood can exhaust descriptors",
            )
        await self.runner.setup()  # AgentRunner installs the connection guard on its server
        server = settings.server
        await start_tcp(self.runner, server.http_host, server.http_port)
        if server.unix_socket:
            await start_unix(self.runner, server.unix_socket, server.unix_socket_mode)
            self._bound_socket = server.unix_socket
        # Serving starts at once (misses fetch on demand); /readyz waits for prefetch.
        self._spawn("refresher", self.components.refresher.run())
        if self.components.parameters is not None:
            self._spawn("parameter-refresher", self.components.parameters.refresher.run())
        self._spawn("readiness", self._become_ready())
        refresher = self.components.refresher
        self._spawn("rotation-watch", self.components.watch.run(refresher.prefetched, lambda: refresher.required))
        if self.events is not None:
            self._spawn("events", self.events.run())
        if self.fanout is not None:
            self._spawn("events", self.fanout.run(self._listen))  # its own queue on the topic, then listening
        self._spawn("watchdog", self.notifier.watchdog())
        self._spawn("connections", self.components.connections.sweep_forever())
        if self.components.request_log is not None:
            self._spawn("request-summary", self.components.request_log.run())
        tcp = next(addr for addr in self.runner.addresses if isinstance(addr, tuple))
        log.info("listening", http=f"{tcp[0]}:{tcp[1]}", unix_socket=server.unix_socket, region=self.clients.region)
        return Started(tcp=(tcp[0], tcp[1]), unix_socket=server.unix_socket, components=self.components, stop=self.stop)

    async def _cut_off_reads(self) -> None:
        grace = self.settings.server.shutdown_grace_seconds
        await asyncio.sleep(max(0.0, grace - min(READ_CUTOFF_MARGIN_SECONDS, grace / 2)))
        await self._stop_caches()

    async def _stop_caches(self) -> None:
        await self.components.reader.caches.stop()  # the agent's own cache, and its other regions'
        if self.components.roles is not None:
            await self.components.roles.stop()
        if self.components.parameters is not None:
            await self.components.parameters.cache.stop()

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _become_ready(self) -> None:
        """Prefetch, then the first template render, then readiness (and READY=1 to systemd)."""
        parts = self.components
        await parts.refresher.prefetched.wait()
        if parts.parameters is not None:
            await parts.parameters.refresher.prefetched.wait()
        if parts.templates is not None:
            await parts.templates.render_all()
        release_free_memory()  # prefetch's replies are garbage now: give their pages back
        parts.started.set()
        self.notifier.ready()

    def reload(self) -> None:
        """SIGHUP: re-read token files now and reopen the audit file (a failure is kept, never raised)."""
        log.info("reloading")
        self.components.auth.reload()
        self.audit.reopen()

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self) -> None:
        """Undo :meth:`startup`: listeners and in-flight requests first; safe after a half-way startup."""
        if self.runner.server is not None:
            self.notifier.stopping()
            # In-flight requests get the grace to finish; shortly before it ends, reads still
            # waiting on upstream are answered (stale value, or 503) rather than cut off.
            cutoff = asyncio.create_task(self._cut_off_reads(), name="read-cutoff")
            await self.runner.cleanup()  # closes the listeners, then waits for in-flight requests
            cutoff.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cutoff
        await self._stop_caches()  # abandons upstream calls still running
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a task that died must not stop the rest of shutdown
                log.exception("background_task_failed", task=task.get_name())
        if self.components.templates is not None:
            await self.components.templates.close()  # after the drain: no read can start a re-render now
        if self.fanout is not None:
            await self.fanout.close()  # unsubscribe and delete the agent's queue, before the pool closes
        self.pacer.close()  # botocore retries still running in threads stop here
        self.ssm_pacer.close()
        self.calls.close()
        if self._bound_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._bound_socket)
            self._bound_socket = None
        self.audit.close()
        log.info("stopped")

    # ------------------------------------------------------------------ the whole life

    async def serve(
        self,
        on_started: Callable[[Started], Awaitable[None] | None] | None = None,
        *,
        install_signals: bool = True,
    ) -> None:
        """Start, run until SIGTERM/SIGINT (or :attr:`stop`), stop."""
        loop = asyncio.get_running_loop()
        try:
            started = await self.startup()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop.set)
                loop.add_signal_handler(signal.SIGHUP, self.reload)
            if on_started is not None:
                maybe = on_started(started)
                if maybe is not None:
                    await maybe
            await self.stop.wait()
            log.info("shutting_down")
        finally:
            # Signal handlers stay installed until shutdown is over: a second
            # SIGTERM while draining must not kill the process mid-shutdown.
            await self.shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)


async def serve(
    settings: Settings,
    *,
    on_started: Callable[[Started], Awaitable[None] | None] | None = None,
    install_signals: bool = True,
) -> None:
    """Build an :class:`Agent` and serve until stopped."""
    await Agent(settings).serve(on_started, install_signals=install_signals)


def run(settings: Settings) -> None:
    """Harden this process (see :mod:`agent.server.hardening`), then serve on a uvloop event loop until stopped."""
    harden_process(lock_memory=settings.server.lock_memory)  # here, not in Agent: in-process agents stay dumpable
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(serve(settings))
