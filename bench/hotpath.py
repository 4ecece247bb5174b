"""CPU per answer on the hot path, in process: the number to watch when changing ``server/fastpath.py``.

The real agent (default settings, logging as ``secrets-agent run`` sets it up,
into /dev/null) runs in this process against a local moto server with a few
secrets prefetched. A client socket connects to each listener and the
server-side protocol object (``AgentRequestHandler``) of that connection is
fed one pre-built request N times through ``data_received``, as the event loop
would; a thread reads the answers off the client socket so the server's
writes never back up. The figure is the main thread's CPU time
(``time.thread_time``) divided by N: the hot path's whole cost per answer
(parse, guard, policy, cache, metrics, accounting, the ``write`` syscall), the
socket read excepted. Each scenario is measured ``--rounds`` times and the
best and median rounds are printed (best: least disturbed by other load).

Scenarios: ``/v1/<id>`` over TCP and over the Unix socket with the shared
token (no clients: unrestricted), the same over TCP for a token client with
an allow list and a secret policy (policy evaluation), ``/secretsmanager/get``,
and ``/ping``. ``--profile`` runs them under cProfile instead (its
overhead dwarfs the figures; for where the time goes, ``py-spy record`` on
``--only v1-tcp --rounds 50`` is closer to the truth).

    python -m bench.hotpath [--requests 20000] [--rounds 5] [--only v1-tcp ...] [--profile]

Not a test: no assertion, just numbers to compare across changes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import pstats
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from agent.config.loader import load_settings
from agent.core import log as agent_log
from agent.dev.emulator import MotoServer, free_port
from agent.server.lifecycle import Agent
from agent.server.protocol import AgentRequestHandler
from bench.common import REGION, moto_client

SECRET = "bench/s0001"
POLICY_TOKEN = "reader-" + secrets.token_hex(12)


@dataclass(frozen=True)
class Scenario:
    """One request sent over one listener."""

    name: str
    listener: str  # tcp or unix
    target: str
    token: str  # "shared" or "policy"


SCENARIOS = (
    Scenario("v1-tcp", "tcp", f"/v1/{SECRET}", "shared"),
    Scenario("v1-unix", "unix", f"/v1/{SECRET}", "shared"),
    Scenario("v1-policy", "tcp", f"/v1/{SECRET}", "policy"),
    Scenario("get-tcp", "tcp", f"/secretsmanager/get?secretId={SECRET}", "shared"),
    Scenario("ping-tcp", "tcp", "/ping", "shared"),
)


def request_bytes(target: str, token: str) -> bytes:
    """A request as a typical client sends it (curl's headers plus the token)."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: localhost:2773\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
        f"X-Aws-Parameters-Secrets-Token: {token}\r\n\r\n"
    ).encode()


def config_text(token_file: Path) -> str:
    """A token client with allow patterns and a secret policy: what a read's policy decision costs."""
    return f"""
[[clients]]
name = "reader"
token = "file://{token_file}"
allow = ["bench/*", "other/*"]

[[secret_policies]]
secret = "bench/denied"
deny = ["reader"]
"""


class Drain(threading.Thread):
    """Reads a client socket until it closes, counting answers (``HTTP/1.1`` status lines)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.answers = 0
        self.first = b""

    def run(self) -> None:
        tail = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            if not self.first:
                self.first = chunk
            data = tail + chunk
            self.answers += data.count(b"HTTP/1.1 ")
            tail = data[-8:]


async def server_side(agent: Agent, before: set[Any]) -> AgentRequestHandler:
    """The protocol object of the connection just opened (the one not in ``before``)."""
    server = agent.runner.server
    assert server is not None
    for _ in range(200):
        new = [h for h in server.connections if h not in before]
        if new:
            handler = new[0]
            assert isinstance(handler, AgentRequestHandler)
            return handler
        await asyncio.sleep(0.01)
    raise RuntimeError("the agent never accepted the benchmark connection")


def measure(handler: AgentRequestHandler, data: bytes, count: int, drain: Drain) -> float:
    """CPU seconds (this thread) for ``count`` answers; raises if any request was not the hot path's."""
    feed = handler.data_received
    batch = 32  # small enough that the socket buffer never fills while the reader catches up
    # Equal but distinct bytes objects, as each socket read gives (no identity shortcut when compared).
    chunks = [bytes(bytearray(data)) for _ in range(batch)]
    base = drain.answers
    started = time.thread_time()
    sent = 0
    while sent < count:
        for chunk in chunks[: min(batch, count - sent)]:
            feed(chunk)
        sent += min(batch, count - sent)
        if handler._fast is None:  # handed off: the figure would be meaningless
            raise RuntimeError(f"request handed off to aiohttp: {drain.first[:200]!r}")
        while drain.answers - base < sent - batch:  # bounded lag; waiting costs this thread no CPU
            time.sleep(0.0005)
    elapsed = time.thread_time() - started
    return elapsed


async def connect(agent: Agent, scenario: Scenario, tcp_port: int, unix_path: str) -> tuple[socket.socket, Any]:
    server = agent.runner.server
    assert server is not None
    before = set(server.connections)
    if scenario.listener == "tcp":
        sock = socket.create_connection(("127.0.0.1", tcp_port))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(unix_path)
    handler = await server_side(agent, before)
    return sock, handler


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hotpath-"))
    token = secrets.token_hex(16)
    token_file = workdir / "reader.token"
    token_file.write_text(POLICY_TOKEN)
    (workdir / "agent.toml").write_text(config_text(token_file))
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    with MotoServer() as moto:
        sm = moto_client(moto.url)
        for i in range(1, 11):
            sm.create_secret(Name=f"bench/s{i:04d}", SecretString=secrets.token_hex(32))
        tcp_port = free_port()
        unix_path = str(workdir / "agent.sock")
        settings = load_settings(
            str(workdir / "agent.toml"),
            environ={"AWS_TOKEN": token},
            overrides={
                "server.http_port": tcp_port,
                "server.unix_socket": unix_path,
                "aws.endpoint_url": moto.url,
                "aws.region": REGION,
                "prefetch.name_prefixes": ["bench/"],
                "log.format": "json",
            },
        )
        with open(os.devnull, "w") as devnull:
            agent_log.configure(settings.log.level, settings.log.format, stream=devnull)
            agent = Agent(settings)
            await agent.startup()
            try:
                await asyncio.wait_for(agent.components.started.wait(), 60)
                await run_scenarios(args, agent, token, tcp_port, unix_path)
            finally:
                await agent.shutdown()


async def run_scenarios(args: argparse.Namespace, agent: Agent, token: str, tcp_port: int, unix_path: str) -> None:
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    print(f"{'scenario':<11} {'best µs':>8} {'median µs':>10}  (CPU per answer; {args.rounds} x {args.requests})")
    for scenario in chosen:
        data = request_bytes(scenario.target, token if scenario.token == "shared" else POLICY_TOKEN)
        sock, handler = await connect(agent, scenario, tcp_port, unix_path)
        drain = Drain(sock)
        drain.start()
        try:
            measure(handler, data, 2000, drain)  # warm up: children made, caches filled
            if args.profile:
                profile(functools.partial(measure, handler, data, args.requests, drain))
                continue
            rounds = [measure(handler, data, args.requests, drain) / args.requests * 1e6 for _ in range(args.rounds)]
            print(f"{scenario.name:<11} {min(rounds):>8.1f} {statistics.median(rounds):>10.1f}")
        finally:
            sock.close()
            drain.join(5)
        await asyncio.sleep(0.05)  # let the agent see the connection close


def profile(run: Callable[[], float]) -> None:
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="answers per round")
    parser.add_argument("--rounds", type=int, default=5)
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--only", nargs="+", choices=names, help="these scenarios only")
    parser.add_argument("--profile", action="store_true", help="cProfile the chosen scenarios (one round each)")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the loop the agent runs on
        runner.run(bench(args))


if __name__ == "__main__":
    main()
