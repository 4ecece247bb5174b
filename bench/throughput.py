"""Cached reads beside nginx, in one run, and the goals table of issue 13.

One run on this machine, default configuration (plus a Unix socket to measure it):

1. moto_server with N (default 1000) secrets ``bench/sNNNN``; the agent as a
   real process, pinned to CPU 0, prefetching all of them (name prefix ``bench/``).
2. RSS of the agent once prefetch is done (``VmRSS`` from /proc), and again after
   the loads, which outlast the first poll pass (metadata for every secret): the
   steady state. The goal row takes the larger.
3. nginx (one worker, pinned to CPU 0 too) serving the very same response bytes
   from a static file at the same path, on TCP and on a Unix socket.
4. Loads on a cached ``GET /v1/bench/s0001`` from CPU 1, each on the agent then
   on nginx, back to back: ``wrk`` over TCP at 1 and 16 connections, and
   ``bench/loadgen.c`` (compiled here) over the Unix socket at 1 and 16 and over
   TCP at 16. wrk cannot open a Unix socket and a proxy in front of it would add
   its own cost, so loadgen does what ``wrk -t1`` does on either socket; its TCP
   row, beside wrk's on the same server, shows what the client itself changes.

CPU per request is the server's CPU time (utime + stime from ``/proc/<pid>/stat``,
all threads; for nginx, master and worker summed) over the run, divided by the
responses the client counted.

Prints every run, then the goals table (met / not met), and writes
``bench/results/throughput.json``. Not a test: no assertion, just numbers to
compare across changes, and only within one run (this VM's speed drifts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.dev.emulator import MotoServer, free_port
from bench.common import agent_command, agent_env, moto_client

PATH = "/v1/bench/s0001"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Issue 13's goals.
GOAL_RATIO = 0.5  # req/s at 16 connections, as a fraction of nginx's on the same socket
GOAL_P99_MS = 0.300  # at one connection, TCP
GOAL_RSS_MIB = 60.0  # with 1000 cached secrets


def parse_wrk(text: str) -> dict[str, float]:
    """Requests, requests/s and p50/p99 latency (ms) from `wrk --latency` output."""

    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    requests = float(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": requests,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def wrk(port: int, connections: int, seconds: int, token: str | None) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"{TOKEN_HEADER}: {token}"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    try:
        return parse_wrk(out)
    except AttributeError:
        print(out, file=sys.stderr)
        raise


def build_loadgen(workdir: Path) -> Path:
    """Compile bench/loadgen.c (the Unix socket load generator) into ``workdir``."""
    binary = workdir / "loadgen"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "loadgen.c")], check=True)
    return binary


def loadgen(
    binary: Path, target: tuple[str, str], connections: int, seconds: int, token: str | None
) -> dict[str, float]:
    """``loadgen`` on ``("-u", socket path)`` or ``("-p", port)``: its JSON line."""
    cmd = ["taskset", "-c", "1", str(binary), *target, "-c", str(connections), "-d", str(seconds)]
    if token:
        cmd += ["-H", f"{TOKEN_HEADER}: {token}"]
    out = subprocess.run([*cmd, PATH], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    result: dict[str, float] = json.loads(out)
    if result["errors"]:
        raise RuntimeError(f"loadgen saw {result['errors']} broken responses: {out}")
    return result


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout}s")


def wait_poll_pass(port: int, token: str, timeout: float = 120.0) -> None:
    """Until the agent has finished a poll pass (``secrets_agent_poll_passes_total`` >= 1)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={TOKEN_HEADER: token})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=5) as reply:
            found = re.search(rb"^secrets_agent_poll_passes_total ([\d.]+)", reply.read(), re.MULTILINE)
        if found and float(found.group(1)) >= 1:
            return
        time.sleep(1)
    raise RuntimeError(f"no poll pass within {timeout}s")


def start_agent(moto_url: str, token: str, port: int, socket: Path, workdir: Path) -> subprocess.Popen[bytes]:
    env = agent_env(
        token,
        {"prefetch_name_prefixes": "bench/", "cache_max_entries": "2000", "server_unix_socket": str(socket)},
    )
    log = open(workdir / "agent.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        agent_command(port, moto_url, cpu="0"), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def start_nginx(body: bytes, socket: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    root = workdir / "www"
    target = root / PATH.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(body)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        listen unix:{socket};
        location / {{ root {root}; default_type application/json; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", str(workdir), "-c", str(conf)])
    wait_http(f"http://127.0.0.1:{port}{PATH}")
    return proc, port


def nginx_pids(master: int) -> list[int]:
    """nginx's master and its workers."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Run:
    """One load on one server."""

    server: str  # "agent" or "nginx"
    socket: str  # "tcp" or "unix"
    client: str  # "wrk" or "loadgen"
    connections: int
    result: dict[str, float]
    cpu_us_per_request: float


def measured(
    server: str, socket: str, client: str, connections: int, pids: list[int], load: Callable[[], dict[str, float]]
) -> Run:
    """Run ``load`` and charge the CPU the server's processes spent meanwhile to its requests."""
    before = cpu_seconds(pids)
    result = load()
    spent = cpu_seconds(pids) - before
    per_request = spent * 1e6 / result["requests"] if result["requests"] else float("nan")
    run = Run(server, socket, client, connections, result, per_request)
    print(
        f"  {server:<6}{socket:<6}{client:<9}{connections:>3} conns {result['rps']:>10,.0f} req/s"
        f"  p99 {result['p99_ms'] * 1000:>7.0f} us  {per_request:>6.1f} us CPU/req",
        flush=True,
    )
    return run


@dataclass
class Server:
    """A server under test: its processes, TCP port, Unix socket, and the token it wants."""

    name: str
    pids: list[int]
    port: int
    socket: Path
    token: str | None


# (socket, client, connections): every load runs on both servers, agent then nginx, back to back.
LOADS = (("tcp", "wrk", 1), ("tcp", "wrk", 16), ("unix", "loadgen", 1), ("unix", "loadgen", 16), ("tcp", "loadgen", 16))


def load_once(server: Server, socket: str, client: str, connections: int, binary: Path, seconds: int) -> Run:
    """One load on one server."""
    target = ("-u", str(server.socket)) if socket == "unix" else ("-p", str(server.port))

    def run() -> dict[str, float]:
        if client == "wrk":
            return wrk(server.port, connections, seconds, server.token)
        return loadgen(binary, target, connections, seconds, server.token)

    return measured(server.name, socket, client, connections, server.pids, run)


def pick(runs: list[Run], server: str, socket: str, client: str, connections: int) -> Run:
    return next(
        r for r in runs if (r.server, r.socket, r.client, r.connections) == (server, socket, client, connections)
    )


def goals(runs: list[Run], rss: float, secrets_count: int) -> list[dict[str, object]]:
    """Issue 13's goals table: each goal with the agent's figure, nginx's, and whether it is met."""
    rows: list[dict[str, object]] = []
    for socket, client, note in (("tcp", "wrk", "goal"), ("unix", "loadgen", "reported, same bar")):
        agent, nginx = pick(runs, "agent", socket, client, 16), pick(runs, "nginx", socket, client, 16)
        ratio = agent.result["rps"] / nginx.result["rps"]
        rows.append(
            {
                "goal": f"req/s, 16 conns, {'TCP' if socket == 'tcp' else 'Unix socket'} ({client})",
                "agent": f"{agent.result['rps']:,.0f}",
                "nginx": f"{nginx.result['rps']:,.0f}",
                "target": f">= {GOAL_RATIO}x nginx ({note})",
                "value": f"{ratio:.2f}x",
                "met": ratio >= GOAL_RATIO,
            }
        )
    agent, nginx = pick(runs, "agent", "tcp", "wrk", 1), pick(runs, "nginx", "tcp", "wrk", 1)
    rows.append(
        {
            "goal": "p99 at 1 conn, TCP (wrk)",
            "agent": f"{agent.result['p99_ms'] * 1000:.0f} us",
            "nginx": f"{nginx.result['p99_ms'] * 1000:.0f} us",
            "target": f"<= {GOAL_P99_MS * 1000:.0f} us",
            "value": f"{agent.result['p99_ms'] * 1000:.0f} us",
            "met": agent.result["p99_ms"] <= GOAL_P99_MS,
        }
    )
    rows.append(
        {
            "goal": f"RSS, {secrets_count} secrets, steady",
            "agent": f"{rss:.1f} MiB",
            "nginx": "",
            "target": f"<= {GOAL_RSS_MIB:.0f} MiB",
            "value": f"{rss:.1f} MiB",
            "met": rss <= GOAL_RSS_MIB,
        }
    )
    agent, nginx = pick(runs, "agent", "tcp", "wrk", 16), pick(runs, "nginx", "tcp", "wrk", 16)
    rows.append(
        {
            "goal": "CPU per request, 16 conns, TCP",
            "agent": f"{agent.cpu_us_per_request:.1f} us",
            "nginx": f"{nginx.cpu_us_per_request:.1f} us",
            "target": "reported",
            "value": f"{agent.cpu_us_per_request / nginx.cpu_us_per_request:.1f}x nginx's",
            "met": None,
        }
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset", "cc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run bench/run.sh (installs wrk, nginx and a C compiler)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="sa-bench-"))
    os.chmod(workdir, 0o755)
    binary = build_loadgen(workdir)
    token = secrets.token_urlsafe(24)
    results: dict[str, object] = {"secrets": args.secrets, "seconds": args.seconds, "cpus": os.cpu_count()}
    runs: list[Run] = []
    with MotoServer() as moto:
        client = moto_client(moto.url)
        payload = json.dumps({"username": "app", "password": "x" * 32, "host": "db.internal", "port": 5432})
        for i in range(args.secrets):
            client.create_secret(Name=f"bench/s{i:04d}", SecretString=payload)
        port = free_port()
        agent = start_agent(moto.url, token, port, workdir / "agent.sock", workdir)
        nginx = None
        try:
            started = time.monotonic()
            wait_http(f"http://127.0.0.1:{port}/readyz")
            results["prefetch_seconds"] = round(time.monotonic() - started, 2)
            time.sleep(1)
            results["rss_mib_after_prefetch"] = round(rss_mib(agent.pid), 1)
            request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers={TOKEN_HEADER: token})
            with urllib.request.urlopen(request) as reply:
                body = reply.read()
            nginx, nginx_port = start_nginx(body, workdir / "nginx.sock", workdir)
            servers = (
                Server("agent", [agent.pid], port, workdir / "agent.sock", token),
                Server("nginx", nginx_pids(nginx.pid), nginx_port, workdir / "nginx.sock", None),
            )
            print(f"agent ready: {results['rss_mib_after_prefetch']} MiB after prefetch; loads:", flush=True)
            # Agent and nginx in turns, each load on both back to back: this VM's speed drifts over minutes.
            for socket, client_name, connections in LOADS:
                for server in servers:
                    runs.append(load_once(server, socket, client_name, connections, binary, args.seconds))
            wait_poll_pass(port, token)  # short runs (--seconds) end before the first one
            results["rss_mib_after_load"] = round(rss_mib(agent.pid), 1)
        finally:
            stop(agent)
            if nginx is not None:
                stop(nginx)
    shutil.rmtree(workdir, ignore_errors=True)

    nginx_rps = {(r.socket, r.client, r.connections): r.result["rps"] for r in runs if r.server == "nginx"}
    print(
        f"\n{args.secrets} secrets cached; response body {len(body)} bytes; {args.seconds}s per run; "
        "server pinned to CPU 0, load generator to CPU 1; default configuration\n"
    )
    print(
        f"{'server':<8}{'socket':<7}{'client':<9}{'conns':>5}{'req/s':>10}{'p50 us':>8}{'p99 us':>8}"
        f"{'CPU us/req':>11}{'x nginx':>8}"
    )
    table = []
    for r in runs:
        ratio = r.result["rps"] / nginx_rps[(r.socket, r.client, r.connections)]
        table.append(
            {
                "server": r.server,
                "socket": r.socket,
                "client": r.client,
                "connections": r.connections,
                **r.result,
                "cpu_us_per_request": round(r.cpu_us_per_request, 2),
                "ratio_to_nginx": round(ratio, 3),
            }
        )
        print(
            f"{r.server:<8}{r.socket:<7}{r.client:<9}{r.connections:>5}{r.result['rps']:>10,.0f}"
            f"{r.result['p50_ms'] * 1000:>8.0f}{r.result['p99_ms'] * 1000:>8.0f}"
            f"{r.cpu_us_per_request:>11.1f}{ratio:>8.2f}"
        )
    rss = max(float(results["rss_mib_after_prefetch"]), float(results["rss_mib_after_load"]))  # type: ignore[arg-type]
    print(
        f"\nagent RSS: {results['rss_mib_after_prefetch']} MiB after prefetch, {results['rss_mib_after_load']} MiB "
        f"after the loads; prefetch took {results['prefetch_seconds']} s"
    )
    goal_rows = goals(runs, rss, args.secrets)
    print(f"\nGoals (issue 13), {time.strftime('%Y-%m-%d', time.gmtime())}:\n")
    print(f"{'goal':<38}{'agent':>12}{'nginx':>12}  {'target':<34}{'value':>14}  verdict")
    for row in goal_rows:
        verdict = "-" if row["met"] is None else ("met" if row["met"] else "NOT met")
        print(
            f"{row['goal']:<38}{row['agent']:>12}{row['nginx']:>12}  {row['target']:<34}{row['value']:>14}  {verdict}"
        )
    results["runs"] = table
    results["goals"] = goal_rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
