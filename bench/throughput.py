"""Cached-read throughput and latency of the agent beside nginx, and RSS with 1000 secrets.

One run on this machine:

1. moto_server with N (default 1000) secrets ``bench/sNNNN``; the agent as a
   real process prefetching all of them (name prefix ``bench/``).
2. RSS of the agent once prefetch is done (``VmRSS`` from /proc).
3. wrk against ``GET /v1/bench/s0001`` at 1 and 16 connections, agent pinned
   to CPU 0 and wrk to CPU 1, for the default log level (one JSON line per
   request, to /dev/null) and for ``log.level = warning``.
4. nginx (one worker, pinned to CPU 0) serving the very same response bytes
   from a static file at the same path: the practical ceiling on this box.

Prints a table and writes ``bench/results/throughput.json``. Not a test: no
assertion, just numbers to compare across changes.
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
from pathlib import Path

from agent.dev.emulator import MotoServer, free_port
from bench.common import agent_command, agent_env, moto_client

PATH = "/v1/bench/s0001"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) from `wrk --latency` output."""

    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": float(errors.group(1)) if errors else 0.0}


def wrk(url: str, connections: int, seconds: int, token: str | None) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"X-Aws-Parameters-Secrets-Token: {token}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    try:
        return parse_wrk(out)
    except AttributeError:
        print(out, file=sys.stderr)
        raise


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


def start_agent(moto_url: str, token: str, port: int, level: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = agent_env(
        token,
        {"prefetch_name_prefixes": "bench/", "cache_max_entries": "2000", "log_level": level},
    )
    log = open(workdir / f"agent-{level}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        agent_command(port, moto_url, cpu="0"), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def start_nginx(body: bytes, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
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
        location / {{ root {root}; default_type application/json; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", str(workdir), "-c", str(conf)])
    wait_http(f"http://127.0.0.1:{port}{PATH}")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run bench/run.sh (installs wrk and nginx)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="sa-bench-"))
    os.chmod(workdir, 0o755)
    token = secrets.token_urlsafe(24)
    results: dict[str, object] = {"secrets": args.secrets, "seconds": args.seconds, "cpus": os.cpu_count()}
    rows: list[tuple[str, int, dict[str, float]]] = []
    with MotoServer() as moto:
        client = moto_client(moto.url)
        payload = json.dumps({"username": "app", "password": "x" * 32, "host": "db.internal", "port": 5432})
        for i in range(args.secrets):
            client.create_secret(Name=f"bench/s{i:04d}", SecretString=payload)
        agents = {}
        try:
            for level in ("info", "warning"):
                port = free_port()
                agent = start_agent(moto.url, token, port, level, workdir)
                agents[level] = agent
                started = time.monotonic()
                wait_http(f"http://127.0.0.1:{port}/readyz")
                if level == "info":
                    results["prefetch_seconds"] = round(time.monotonic() - started, 2)
                    time.sleep(1)
                    results["rss_mib_after_prefetch"] = round(rss_mib(agent.pid), 1)
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}{PATH}", headers={"X-Aws-Parameters-Secrets-Token": token}
                )
                with urllib.request.urlopen(request) as reply:
                    body = reply.read()
                for conns in (1, 16):
                    rows.append(
                        (
                            f"agent (log {level})",
                            conns,
                            wrk(f"http://127.0.0.1:{port}{PATH}", conns, args.seconds, token),
                        )
                    )
                if level == "info":
                    results["rss_mib_after_load"] = round(rss_mib(agent.pid), 1)
                stop(agent)
            nginx, nginx_port = start_nginx(body, workdir)
            try:
                for conns in (1, 16):
                    rows.append(
                        (
                            "nginx (same bytes)",
                            conns,
                            wrk(f"http://127.0.0.1:{nginx_port}{PATH}", conns, args.seconds, None),
                        )
                    )
            finally:
                stop(nginx)
        finally:
            for agent in agents.values():
                stop(agent)
    shutil.rmtree(workdir, ignore_errors=True)

    nginx_rps = {conns: r["rps"] for name, conns, r in rows if name.startswith("nginx")}
    print(
        f"\n{args.secrets} secrets cached; response body {len(body)} bytes; {args.seconds}s per run; "
        "server pinned to CPU 0, wrk to CPU 1\n"
    )
    print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x nginx':>9}")
    table = []
    for name, conns, r in rows:
        ratio = r["rps"] / nginx_rps[conns]
        table.append({"server": name, "connections": conns, **r, "ratio_to_nginx": round(ratio, 3)})
        print(f"{name:<22}{conns:>6}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{ratio:>9.2f}")
    print(
        f"\nagent RSS: {results['rss_mib_after_prefetch']} MiB after prefetch of {args.secrets} secrets, "
        f"{results['rss_mib_after_load']} MiB after load; prefetch took {results['prefetch_seconds']} s"
    )
    results["runs"] = table
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
