"""Freshness benchmark: upstream calls per secret-hour and staleness after rotation, by refresh policy.

For N cached secrets (10, 100, 1000) and three policies

- ``ttl``:   AWS-agent behaviour (revalidate on the first read after ttl 300 s),
- ``poll``:  the default (ListSecrets change detection every 30 s),
- ``events``: poll plus an SQS queue fed with EventBridge-shaped events,

it runs the real agent (a process) against moto through a counting proxy,
reads every secret continuously (as an app would), rotates a few secrets with
PutSecretValue at spread-out times, and measures how long each rotation takes
to show up at the agent.

Time is compressed by ``--scale`` (default 10): ttl 30 s, interval 3 s, SQS
long poll 2 s, a 90 s window (three TTLs, counted from half a TTL after start)
standing for 15 minutes. Every rate in the system
scales with it, so calls per secret-hour and polling/TTL staleness are reported
in real (unscaled) units: counts as measured over the equivalent real window,
staleness multiplied by the scale. Event-driven staleness does not scale (it is
SQS delivery plus one refresh) and is reported as measured.

Run: ``.venv/bin/python -m bench.freshness`` (about 15 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.dev.emulator import MotoServer, free_port
from bench.common import agent_command, agent_env, moto_client
from tests.support.faultproxy import FaultProxy

SM_OPS = ("GetSecretValue", "BatchGetSecretValue", "DescribeSecret", "ListSecrets")
SQS_OPS = ("ReceiveMessage", "DeleteMessage")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Run:
    n: int
    policy: str
    sm_calls: int
    sqs_calls: int
    real_hours: float
    staleness: list[float]  # real seconds

    @property
    def calls_per_secret_hour(self) -> float:
        return self.sm_calls / self.n / self.real_hours

    @property
    def calls_per_hour(self) -> float:
        return (self.sm_calls + self.sqs_calls) / self.real_hours


def event_body(arn: str) -> str:
    return json.dumps(
        {
            "source": "aws.secretsmanager",
            "detail-type": "AWS API Call via CloudTrail",
            "detail": {"eventName": "PutSecretValue", "responseElements": {"aRN": arn}},
        }
    )


async def wait_ready(session: aiohttp.ClientSession, base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/readyz") as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("agent not ready")


async def run_policy(
    moto: MotoServer, client: Any, sqs: Any, arns: dict[str, str], policy: str, args: argparse.Namespace
) -> Run:
    scale = args.scale
    ttl, interval = 300 / scale, 30 / scale
    proxy = await FaultProxy(moto.url).start()
    token = secrets.token_urlsafe(16)
    port = free_port()
    env = agent_env(
        token,
        {
            "prefetch_name_prefixes": "f/",
            "cache_max_entries": "5000",
            "cache_ttl_seconds": str(max(1, round(ttl))),
            "refresh_interval_seconds": str(max(1, round(interval))),
            "refresh_mode": "ttl" if policy == "ttl" else "poll",
            "log_level": "warning",
        },
    )
    queue = None
    if policy == "events":
        queue = sqs.create_queue(QueueName=f"bench-{secrets.token_hex(4)}")["QueueUrl"]
        env["SECRETS_AGENT_EVENTS_SQS_QUEUE_URL"] = queue
        env["SECRETS_AGENT_EVENTS_WAIT_TIME_SECONDS"] = str(max(1, round(20 / scale)))
    agent = subprocess.Popen(
        agent_command(port, proxy.url), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Aws-Parameters-Secrets-Token": token}
    names = list(arns)
    staleness: list[float] = []
    try:
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            await wait_ready(session, base)
            stop = asyncio.Event()

            async def read(name: str) -> Any:
                async with session.get(f"{base}/v1/{name}") as reply:
                    return await reply.json()

            async def readers() -> None:
                # The app: every secret read at least once per ttl/10.
                while not stop.is_set():
                    started = time.monotonic()
                    for i in range(0, len(names), 64):
                        await asyncio.gather(*(read(n) for n in names[i : i + 64]))
                    await asyncio.sleep(max(0.0, ttl / 10 - (time.monotonic() - started)))

            async def rotate_and_watch(at: float, name: str) -> None:
                await asyncio.sleep(at)
                new = (
                    await asyncio.to_thread(client.put_secret_value, SecretId=name, SecretString=secrets.token_hex(8))
                )["VersionId"]
                rotated = time.monotonic()
                if queue is not None:
                    await asyncio.to_thread(sqs.send_message, QueueUrl=queue, MessageBody=event_body(arns[name]))
                while time.monotonic() - rotated < 3 * ttl:
                    if (await read(name))["VersionId"] == new:
                        break
                    await asyncio.sleep(0.05)
                seen = time.monotonic() - rotated
                staleness.append(seen if policy == "events" else seen * scale)

            rng = random.Random(args.seed + len(names))
            picks = rng.sample(names, args.rotations)
            times = [args.window * (i + 0.5) / args.rotations for i in range(args.rotations)]
            reader = asyncio.create_task(readers())
            # Warm-up of half a TTL: prefetch loads every secret at once, so TTL expiries
            # come in lockstep; counting from mid-cycle over whole TTLs measures the
            # steady state (one revalidation per secret per TTL) instead of an edge effect.
            await asyncio.sleep(ttl / 2)
            proxy.calls.clear()
            started = time.monotonic()
            await asyncio.gather(*(rotate_and_watch(t, n) for t, n in zip(times, picks, strict=True)))
            await asyncio.sleep(max(0.0, args.window - (time.monotonic() - started)))
            elapsed = time.monotonic() - started
            stop.set()
            await reader
            sm_calls = sum(proxy.calls[op] for op in SM_OPS)
            sqs_calls = sum(proxy.calls[op] for op in SQS_OPS)
    finally:
        agent.terminate()
        agent.wait(20)
        await proxy.stop()
    return Run(len(names), policy, sm_calls, sqs_calls, elapsed * scale / 3600, staleness)


async def main_async(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    with MotoServer() as moto:
        client = moto_client(moto.url)
        sqs = moto_client(moto.url, "sqs")
        for n in args.sizes:
            moto.reset()
            arns = {}
            for i in range(n):
                name = f"f/s{i:04d}"
                arns[name] = client.create_secret(Name=name, SecretString="initial")["ARN"]
            for policy in ("ttl", "poll", "events"):
                run = await run_policy(moto, client, sqs, arns, policy, args)
                runs.append(run)
                print(
                    f"N={n:<5} {policy:<7} calls/secret-hour {run.calls_per_secret_hour:8.2f}  "
                    f"staleness max {max(run.staleness):7.1f}s p50 {statistics.median(run.staleness):7.1f}s",
                    flush=True,
                )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=90.0, help="scaled seconds per run")
    parser.add_argument("--rotations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    runs = asyncio.run(main_async(args))
    print(
        f"\nscale {args.scale:g}: ttl 300 s, interval 30 s; window {args.window * args.scale / 60:.0f} real minutes, "
        f"{args.rotations} rotations per run (staleness in real seconds)\n"
    )
    header = (
        f"{'N':>5} {'policy':<7} {'SM calls/secret-h':>18} {'SQS calls/h':>12} {'stale p50 s':>12} "
        f"{'stale max s':>12} {'calls/h x max':>14} {'ttl / this':>11}"
    )
    print(header)
    table = []
    baseline: dict[int, float] = {}
    for run in runs:
        product = run.calls_per_hour * max(run.staleness)
        if run.policy == "ttl":
            baseline[run.n] = product
        ratio = baseline[run.n] / product if product else float("inf")
        row = {
            "n": run.n,
            "policy": run.policy,
            "sm_calls_per_secret_hour": round(run.calls_per_secret_hour, 3),
            "sqs_calls_per_hour": round(run.sqs_calls / run.real_hours, 1),
            "staleness_p50_s": round(statistics.median(run.staleness), 2),
            "staleness_max_s": round(max(run.staleness), 2),
            "calls_per_hour_x_max_staleness": round(product, 1),
            "ttl_over_this": round(ratio, 1),
        }
        table.append(row)
        print(
            f"{run.n:>5} {run.policy:<7} {row['sm_calls_per_secret_hour']:>18.2f} {row['sqs_calls_per_hour']:>12.0f} "
            f"{row['staleness_p50_s']:>12.1f} {row['staleness_max_s']:>12.1f} {product:>14.0f} {ratio:>11.1f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "freshness.json").write_text(json.dumps({"args": vars(args), "runs": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
