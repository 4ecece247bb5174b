"""Fleet simulation: many agents in one account against Secrets Manager's account-wide quotas.

Run: ``make bench-fleet`` (``python -m bench.fleet``; ``--quick`` for a shorter run). Writes
``bench/results/fleet.json`` and prints a Markdown table.

What is real and what is modelled
---------------------------------
* Real: :class:`agent.cache.planner.Planner` (plan per pass, intervals, jitter, start-up
  spread, prefetch API, throttle holds), :class:`agent.upstream.throttle.AttemptPacer`
  (5 attempts/s while throttled, 30 s quiet) and :class:`~agent.upstream.throttle.Backoff`,
  all on the simulated clock.
* Modelled: the refresher's pass (the same steps as ``Refresher.poll_once``: list or
  describe, re-read moved secrets with GetSecretValue or BatchGetSecretValue, fall back
  to GetSecretValue when a batch throttles, describe everything when ListSecrets throttles
  (when that fits the budget, else wait for the re-planned interval), one round-robin
  DescribeSecret every 4th listing pass, back off after a failed pass),
  botocore's standard retries (3 attempts, exponential backoff with jitter), and Secrets
  Manager: one token bucket per API refilled at the account quota (1 s of burst).
* Time advances in ticks of ``DT`` seconds. Every agent is identical up to its random
  draws, so ``K`` sample agents (all of them when the fleet is small) are simulated in
  full, each standing for ``fleet / K`` agents: the demand on a bucket in a tick is the
  sample's calls times that weight, and each sample call of the tick succeeds with the
  probability the bucket admits (a fluid approximation of the fleet's independent calls).
* AWS's agent's policy on the same simulation: TTL 300 s; the first read after expiry
  calls DescribeSecret, then GetSecretValue if the version moved; no prefetch (the first
  read of each secret calls GetSecretValue as the application starts, within 1 s), no
  pacing, botocore's retries. Assumed read rate: every secret is read every 10 s, so the
  check happens on average 5 s after expiry (a busier application changes nothing: one
  check per TTL; a much idler one makes fewer calls and serves staler values).
* Events (SNS fan-out): a rotation reaches every agent 0.2 to 1.0 s later; after the
  planner's event delay the agent describes the secret and re-reads it if it moved (a
  failed refresh is redelivered by SQS 30 s later). Polling stays on as the backstop (the
  planner's events rule). SQS requests (one ReceiveMessage long poll per 20 s per agent,
  plus a receive and a delete per event) are priced apart: SQS bills them, not Secrets
  Manager.
* Every agent caches the same 20 secrets and starts at t = 0 (the whole fleet cold-starts
  at once); the steady window is a run's last 2,700 s (900 s to 3,600 s in a one-hour
  row; the wrong-hint row also runs three hours). Each secret rotates twice at random
  times in it (compressed, for staleness statistics). Staleness is, for each rotation and
  sample agent, the time from the rotation until that agent serves the new value (a
  rotation never seen by the end counts until the end). Calls per second are measured in
  the steady window, compressed rotations included; calls per month count the steady
  calls that are not caused by rotations, plus what a rotation cost times 20 rotations a
  month (each secret rotating every 30 days), successful calls only, at $0.05 per 10,000
  (throttled attempts are reported, not billed).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.cache.planner import (
    ACCOUNT_QUOTAS,
    BATCH_GET_SECRET_VALUE,
    DESCRIBE_SECRET,
    GET_SECRET_VALUE,
    LIST_SECRETS,
    Planner,
)
from agent.upstream.throttle import AttemptPacer, Backoff

RESULTS = Path(__file__).resolve().parent / "results"
APIS = (GET_SECRET_VALUE, DESCRIBE_SECRET, LIST_SECRETS, BATCH_GET_SECRET_VALUE)
DT = 0.1  # seconds per tick (a call's latency in the model: 0 to DT)
SECRETS = 20
INTERVAL = 30.0  # refresh.interval_seconds default
TTL = 300.0  # cache.ttl_seconds default, AWS's agent's TTL
READ_EVERY = 10.0  # assumed: each secret read every 10 s (AWS's agent's policy checks on the first read after expiry)
MAX_ATTEMPTS = 3  # botocore standard retry mode
VISIBILITY_TIMEOUT = 30.0  # SQS: an event message not deleted comes back this much later
DURATION = 3600.0
STEADY = 2700.0  # the steady-state window is the last STEADY seconds
ROTATE_MARGIN = 600.0  # no rotation in the last 600 s, so AWS's agent's TTL can see the last ones
ROTATIONS_PER_SECRET = 2
SAMPLE = 1000  # agents simulated in full; each stands for fleet / SAMPLE
PRICE_PER_CALL = 0.05 / 10_000
SQS_PRICE_PER_CALL = 0.40 / 1_000_000
MONTH = 30 * 86_400
ROTATIONS_PER_MONTH = SECRETS  # for the monthly figures: each secret rotates once in 30 days


@dataclass
class Call:
    agent: Any
    api: str
    attempt: int
    done: Callable[[bool], None]
    rotation: bool  # made because a secret rotated (a re-read, or an event's DescribeSecret)


@dataclass
class Stats:
    attempts: Counter[str] = field(default_factory=Counter)  # weighted, steady window
    ok: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    start_throttled: int = 0  # weighted throttled attempts in the first 300 s
    staleness: list[float] = field(default_factory=list)
    rotation_ok: float = 0.0  # weighted successful calls made because of a rotation, steady window


class Sim:
    """The clock, the agents' timers, and the account's token buckets."""

    def __init__(self, fleet: int, seed: int, duration: float = DURATION) -> None:
        self.duration = duration
        self.steady_from = duration - STEADY
        self.now = 0.0
        self.rng = random.Random(seed)
        self.sample = min(fleet, SAMPLE)
        self.weight = fleet / self.sample
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.pending: dict[int, list[Call]] = defaultdict(list)
        self.tokens = dict(ACCOUNT_QUOTAS)
        self.stats = Stats()
        self._seq = itertools.count()
        self.versions = [1] * SECRETS
        self.rotated_at: list[dict[int, float]] = [{} for _ in range(SECRETS)]
        self.tick = 0
        self.resolving = False

    def clock(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self._seq), action))

    def call(
        self, agent: Any, api: str, done: Callable[[bool], None], attempt: int = 1, *, rotation: bool = False
    ) -> None:
        """Send one attempt now, or when the agent's pacer lets it go."""
        wait = agent.pace()
        when = self.now + wait
        # Calls made while a tick's calls are being answered go in a later tick (that one is already drawn).
        first = self.tick + 1 if self.resolving else self.tick
        self.pending[max(first, math.floor(when / DT + 1e-9))].append(Call(agent, api, attempt, done, rotation))

    def rotate(self, secret: int) -> None:
        self.versions[secret] += 1
        self.rotated_at[secret][self.versions[secret]] = self.now

    def installed(self, secret: int, old: int, new: int) -> None:
        for version in range(old + 1, new + 1):
            rotated = self.rotated_at[secret].get(version)
            if rotated is not None:
                self.stats.staleness.append(self.now - rotated)

    def run(self, agents: list[Any], on_rotation: Callable[[int], None] | None) -> None:
        for secret in range(SECRETS):
            for _ in range(ROTATIONS_PER_SECRET):
                when = self.rng.uniform(self.steady_from, self.duration - ROTATE_MARGIN)
                self.at(when, lambda s=secret: self._rotation(s, on_rotation))
        for agent in agents:
            agent.start()
        ticks = int(self.duration / DT)
        for tick in range(ticks):
            self.tick = tick
            end = (tick + 1) * DT
            while self.timers and self.timers[0][0] < end:
                when, _, action = heapq.heappop(self.timers)
                self.now = max(when, tick * DT)
                action()
            self.now = end
            calls = self.pending.pop(tick, None)
            if calls:
                self.resolving = True
                self._resolve(calls)
                self.resolving = False
            for api, quota in ACCOUNT_QUOTAS.items():
                self.tokens[api] = min(quota, self.tokens[api] + quota * DT)
        self.now = self.duration
        for agent in agents:  # rotations an agent never saw count until the end
            for secret in range(SECRETS):
                self.installed(secret, agent.known[secret], self.versions[secret])

    def _rotation(self, secret: int, on_rotation: Callable[[int], None] | None) -> None:
        self.rotate(secret)
        if on_rotation is not None:
            on_rotation(secret)

    def _resolve(self, calls: list[Call]) -> None:
        by_api: dict[str, list[Call]] = defaultdict(list)
        for call in calls:
            by_api[call.api].append(call)
        steady = self.now >= self.steady_from
        w = self.weight
        outcomes: list[tuple[Call, bool]] = []
        for api, group in by_api.items():
            demand = len(group) * w
            admitted = min(demand, self.tokens[api])
            self.tokens[api] -= admitted
            share = admitted / demand
            for call in group:
                ok = share >= 1 or self.rng.random() < share
                outcomes.append((call, ok))
                if steady:
                    self.stats.attempts[api] += w
                    self.stats.ok[api] += w if ok else 0
                    self.stats.rotation_ok += w if ok and call.rotation else 0
                    self.stats.throttled[api] += 0 if ok else w
                elif not ok and self.now < 300:
                    self.stats.start_throttled += int(w)
        for call, ok in outcomes:
            if ok:
                call.done(True)
                continue
            call.agent.throttled()
            if call.attempt < MAX_ATTEMPTS:
                delay = self.rng.uniform(0, min(20.0, 2.0 ** (call.attempt - 1)))
                self.at(
                    self.now + delay,
                    lambda c=call: self.call(c.agent, c.api, c.done, c.attempt + 1, rotation=c.rotation),
                )
            else:
                call.done(False)


def gather(count: int, then: Callable[[list[bool]], None]) -> list[Callable[[bool], None]]:
    """``count`` call callbacks; ``then`` gets their outcomes once all have answered."""
    results: list[bool | None] = [None] * count
    left = [count]

    def one(index: int) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            results[index] = ok
            left[0] -= 1
            if left[0] == 0:
                then([bool(r) for r in results])

        return done

    return [one(i) for i in range(count)]


class OurAgent:
    """This agent: the real planner, pacer and backoff; the refresher's pass as modelled above."""

    def __init__(self, sim: Sim, index: int, *, hint: int, share: float, events: bool) -> None:
        self.sim = sim
        self.rng = random.Random(hash((index, 17)))
        self.planner = Planner(
            interval=INTERVAL,
            fleet_size=hint,
            quota_share=share,
            events=events,
            max_interval=TTL,
            clock=sim.clock,
            rng=self.rng,
        )
        self._slept = 0.0
        self.pacer = AttemptPacer(clock=sim.clock, sleep=self._sleep)
        self.backoff = Backoff(base=INTERVAL, cap=max(10 * INTERVAL, 300.0), rng=self.rng)
        self.known = [0] * SECRETS  # installed version per secret (0: not loaded)
        self.ready_at: float | None = None
        self.passes = 0

    def _sleep(self, seconds: float) -> None:
        self._slept = seconds

    def pace(self) -> float:
        self._slept = 0.0
        self.pacer._before_send()  # the pacer's botocore hook, called as botocore would before each attempt
        return self._slept

    def throttled(self) -> None:
        self.pacer.note_throttle()

    def install(self, secrets: list[int]) -> None:
        for secret in secrets:
            old, new = self.known[secret], self.sim.versions[secret]
            if new > old:
                self.known[secret] = new
                if old:
                    self.sim.installed(secret, old, new)
        if self.ready_at is None and all(self.known):
            self.ready_at = self.sim.now

    def start(self) -> None:
        self.sim.at(self.planner.startup_delay(SECRETS), lambda: self.fetch(list(range(SECRETS)), self.after_prefetch))

    def fetch(self, secrets: list[int], then: Callable[[bool], None], *, rotation: bool = False) -> None:
        """Refresher._fetch_current: a batch (GetSecretValue per secret if it throttles), or one get each."""
        if len(secrets) > 1 and self.planner.prefetch_via(len(secrets)) == "batch":

            def batch_done(ok: bool) -> None:
                if ok:
                    self.install(secrets)
                    then(True)
                else:
                    self.planner.note_throttled(BATCH_GET_SECRET_VALUE)
                    self.get_each(secrets, then, rotation=rotation)

            self.sim.call(self, BATCH_GET_SECRET_VALUE, batch_done, rotation=rotation)
        else:
            self.get_each(secrets, then, rotation=rotation)

    def get_each(self, secrets: list[int], then: Callable[[bool], None], *, rotation: bool = False) -> None:
        def all_done(results: list[bool]) -> None:
            self.install([s for s, ok in zip(secrets, results, strict=True) if ok])
            then(all(results))

        for _secret, done in zip(secrets, gather(len(secrets), all_done), strict=True):
            self.sim.call(self, GET_SECRET_VALUE, done, rotation=rotation)

    def after_prefetch(self, _ok: bool) -> None:
        plan = self.planner.plan(SECRETS, 1)
        self.sim.at(self.sim.now + self.planner.first_wait(plan.interval), self.poll)

    def poll(self) -> None:
        missing = [s for s in range(SECRETS) if not self.known[s]]
        if missing:  # prefetch ids that failed are retried first
            self.fetch(missing, lambda ok: self.detect() if ok else self.finish(False, INTERVAL))
            return
        self.detect()

    def detect(self) -> None:
        plan = self.planner.plan(SECRETS, 1)
        self.passes += 1
        if plan.how == "list":

            def listed(results: list[bool]) -> None:
                if all(results):
                    moved = [s for s in range(SECRETS) if self.sim.versions[s] != self.known[s]]
                    extra = 1 if self.passes % 4 == 0 else 0  # the round-robin DescribeSecret
                    for done in gather(extra, lambda _r: None):
                        self.sim.call(self, DESCRIBE_SECRET, done)
                    self.reread(moved, plan.interval)
                else:
                    self.planner.note_throttled(LIST_SECRETS)
                    replanned = self.planner.plan(SECRETS, 1)  # listing held: describe now only if it fits
                    if replanned.stretched or replanned.how != "describe":
                        self.planner.hold_for(LIST_SECRETS, 2 * replanned.interval)  # the next pass describes
                        self.finish(True, replanned.interval)
                    else:
                        self.describe_all(replanned.interval)

            for done in gather(plan.calls, listed):
                self.sim.call(self, LIST_SECRETS, done)
        else:
            self.describe_all(plan.interval)

    def describe_all(self, interval: float) -> None:
        def described(results: list[bool]) -> None:
            moved = [s for s, ok in enumerate(results) if ok and self.sim.versions[s] != self.known[s]]
            if not all(results):
                self.planner.note_throttled(DESCRIBE_SECRET)
            self.reread(moved, interval, failed=not all(results))

        for done in gather(SECRETS, described):
            self.sim.call(self, DESCRIBE_SECRET, done)

    def reread(self, moved: list[int], interval: float, *, failed: bool = False) -> None:
        if not moved:
            self.finish(not failed, interval)
            return
        self.fetch(moved, lambda ok: self.finish(ok and not failed, interval), rotation=True)

    def finish(self, ok: bool, interval: float) -> None:
        wait = self.planner.jittered(interval)
        if ok:
            self.backoff.reset()
        else:
            wait = max(wait, self.backoff.next_delay())
        self.sim.at(self.sim.now + wait, self.poll)

    def on_event(self, secret: int) -> None:
        """Refresher.refresh_secret: the planner's event delay, DescribeSecret, GetSecretValue if it moved."""
        self.sim.at(self.sim.now + self.planner.event_delay(), lambda: self.handle_event(secret))

    def handle_event(self, secret: int) -> None:
        def redeliver() -> None:  # a failed refresh leaves the message: SQS redelivers it after the visibility timeout
            self.sim.at(self.sim.now + VISIBILITY_TIMEOUT, lambda: self.handle_event(secret))

        def got(ok: bool) -> None:
            if ok:
                self.install([secret])
            else:
                redeliver()

        def described(ok: bool) -> None:
            if not ok:
                redeliver()
            elif self.sim.versions[secret] != self.known[secret]:
                self.sim.call(self, GET_SECRET_VALUE, got, rotation=True)

        self.sim.call(self, DESCRIBE_SECRET, described, rotation=True)


class AwsAgent:
    """AWS's agent's policy: TTL 300 s, DescribeSecret on the first read after expiry, GetSecretValue on change."""

    def __init__(self, sim: Sim, index: int) -> None:
        self.sim = sim
        self.rng = random.Random(hash((index, 29)))
        self.known = [0] * SECRETS
        self.ready_at: float | None = None

    def pace(self) -> float:
        return 0.0

    def throttled(self) -> None:
        pass

    def start(self) -> None:
        for secret in range(SECRETS):
            self.sim.at(self.rng.uniform(0, 1.0), lambda s=secret: self.first_read(s))

    def first_read(self, secret: int) -> None:
        def got(ok: bool) -> None:
            if not ok:  # the application's read failed: it reads again a second later
                self.sim.at(self.sim.now + 1.0, lambda: self.first_read(secret))
                return
            self.known[secret] = self.sim.versions[secret]
            if self.ready_at is None and all(self.known):
                self.ready_at = self.sim.now
            self.expire_later(secret)

        self.sim.call(self, GET_SECRET_VALUE, got)

    def expire_later(self, secret: int) -> None:
        self.sim.at(self.sim.now + TTL + self.rng.uniform(0, READ_EVERY), lambda: self.check(secret))

    def check(self, secret: int) -> None:
        def described(ok: bool) -> None:
            if not ok:
                self.sim.at(self.sim.now + self.rng.uniform(0, READ_EVERY), lambda: self.check(secret))
                return
            if self.sim.versions[secret] != self.known[secret]:

                def got(fetched: bool) -> None:
                    if fetched:
                        old, new = self.known[secret], self.sim.versions[secret]
                        self.known[secret] = new
                        self.sim.installed(secret, old, new)
                    self.expire_later(secret)

                self.sim.call(self, GET_SECRET_VALUE, got, rotation=True)
            else:
                self.expire_later(secret)

        self.sim.call(self, DESCRIBE_SECRET, described)


def simulate(
    fleet: int, policy: str, *, hint: int | None = None, share: float = 0.5, seed: int = 1, hours: float = 1.0
) -> dict[str, Any]:
    """One run: ``policy`` is "poll", "events" or "aws"; ``hint`` is fleet.size (default: the true size)."""
    sim = Sim(fleet, seed, duration=3600.0 * hours)
    agents: list[Any]
    if policy == "aws":
        agents = [AwsAgent(sim, i) for i in range(sim.sample)]
    else:
        agents = [
            OurAgent(sim, i, hint=hint or fleet, share=share, events=policy == "events") for i in range(sim.sample)
        ]
    on_rotation = None
    if policy == "events":

        def on_rotation(secret: int) -> None:
            for agent in agents:
                sim.at(sim.now + sim.rng.uniform(0.2, 1.0), lambda a=agent: a.on_event(secret))

    sim.run(agents, on_rotation)
    window = STEADY
    stats = sim.stats
    ready = sorted(a.ready_at if a.ready_at is not None else math.inf for a in agents)
    rates = {api: stats.attempts[api] / window for api in APIS}
    # Rotations are compressed (every secret twice in 45 minutes) for staleness statistics; the monthly
    # figures count the calls a rotation costs at a realistic ROTATIONS_PER_MONTH instead.
    rotations = SECRETS * ROTATIONS_PER_SECRET
    per_rotation = stats.rotation_ok / rotations
    ok_per_s = (sum(stats.ok.values()) - stats.rotation_ok) / window
    monthly = ok_per_s * MONTH + per_rotation * ROTATIONS_PER_MONTH
    sqs_per_s = 0.0
    if policy == "events":  # long polls (one ReceiveMessage per 20 s per agent), a receive and a delete per event
        sqs_per_s = fleet / 20.0 + 2 * fleet * ROTATIONS_PER_MONTH / MONTH
    staleness = sorted(stats.staleness)
    return {
        "fleet": fleet,
        "policy": policy,
        "hint": hint or fleet,
        "quota_share": share,
        "sampled": sim.sample,
        "hours": hours,
        "calls_per_s": {api: round(rate, 2) for api, rate in rates.items()},
        "quota_pct": {api: round(100 * rates[api] / ACCOUNT_QUOTAS[api], 1) for api in APIS},
        "throttled_per_s": round(sum(stats.throttled.values()) / window, 2),
        "start_throttled": stats.start_throttled,
        "ready_p99_s": round(ready[max(0, math.ceil(0.99 * len(ready)) - 1)], 1),
        "ready_max_s": round(ready[-1], 1),
        "staleness_p50_s": round(statistics.median(staleness), 1),
        "staleness_p99_s": round(staleness[max(0, math.ceil(0.99 * len(staleness)) - 1)], 1),
        "staleness_max_s": round(staleness[-1], 1),
        "calls_per_rotation": round(per_rotation),
        "calls_per_month": monthly,
        "usd_per_month": monthly * PRICE_PER_CALL,
        "sqs_usd_per_month": sqs_per_s * MONTH * SQS_PRICE_PER_CALL,
    }


SCENARIOS: list[tuple[str, int, str, int | None, float]] = [
    (f"{fleet:,}", fleet, policy, None, 1.0)
    for fleet in (1, 100, 1_000, 10_000, 100_000)
    for policy in ("aws", "poll", "events")
] + [
    ("10,000, fleet.size left at 1 (first hour)", 10_000, "poll", 1, 1.0),
    ("10,000, fleet.size left at 1 (third hour)", 10_000, "poll", 1, 3.0),
    ("10,000 pods as 500 node agents", 500, "aws", None, 1.0),
    ("10,000 pods as 500 node agents", 500, "poll", None, 1.0),
    ("10,000 pods as 500 node agents", 500, "events", None, 1.0),
]
POLICY_NAMES = {"aws": "AWS agent (TTL 300 s)", "poll": "poll (planner)", "events": "events + backstop"}


def money(value: float) -> str:
    return f"${value:,.0f}" if value >= 10 else f"${value:,.2f}"


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    head = (
        "| agents x 20 secrets | policy | GetSecretValue/s | DescribeSecret/s | ListSecrets/s | BatchGet/s "
        "| throttled/s | cold start ready p99 / max s | throttled at start | staleness p50 / p99 / max s "
        "| Secrets Manager calls/month | $/month | SQS $/month |"
    )
    lines = [head, "|" + "---|" * 13]
    for label, row in zip(labels, rows, strict=True):
        calls = row["calls_per_s"]
        pct = row["quota_pct"]
        cells = [f"{calls[api]:,.1f} ({pct[api]:g}%)" for api in APIS]
        sqs = money(row["sqs_usd_per_month"]) if row["policy"] == "events" else "-"
        lines.append(
            f"| {label} | {POLICY_NAMES[row['policy']]} | "
            + " | ".join(cells)
            + f" | {row['throttled_per_s']:,.1f} | {row['ready_p99_s']:g} / {row['ready_max_s']:g}"
            f" | {row['start_throttled']:,} | {row['staleness_p50_s']:g} / {row['staleness_p99_s']:g} /"
            f" {row['staleness_max_s']:g} | {row['calls_per_month']:.3g} | {money(row['usd_per_month'])} | {sqs} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, help="only fleets of this size")
    args = parser.parse_args()
    rows, labels = [], []
    started = time.monotonic()
    for label, fleet, policy, hint, hours in SCENARIOS:
        if args.only is not None and fleet != args.only:
            continue
        began = time.monotonic()
        rows.append(simulate(fleet, policy, hint=hint, hours=hours))
        labels.append(label)
        print(f"# {label} {policy}: {time.monotonic() - began:.1f} s", flush=True)
    print()
    print(table(rows, labels))
    print(f"\n({len(rows)} rows in {time.monotonic() - started:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps({"rows": rows, "labels": labels}, indent=2))


if __name__ == "__main__":
    main()
