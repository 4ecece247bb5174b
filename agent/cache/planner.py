"""How each change-detection pass asks upstream, so that a whole fleet stays inside the account's quotas.

Every agent in an account and region shares that account's Secrets Manager
quotas (:data:`ACCOUNT_QUOTAS`, requests per second). This agent may use
``quota_share`` of each, split evenly over ``fleet.size`` agents (a hint the
operator gives; the agents do not talk to each other)::

    budget(api) = quota(api) * quota_share / fleet_size        calls/s, this agent

A pass can detect changes of ``n`` cached secrets in two ways:

``list``
    ListSecrets: ``L`` calls per pass (100 secrets per page, or 10 names per
    call when the account is much larger than the cache). Cheapest in calls,
    but the ListSecrets quota is 100/s for the whole account: past a few
    thousand agents there is not one call per agent per interval.
``describe``
    DescribeSecret per cached secret: ``n`` calls per pass, against a quota of
    40,000/s. More calls, but the quota is 400 times larger.

The planner picks, at every pass:

1. the plan with the fewest calls per pass among those that fit the budget at
   the configured interval (``refresh.interval_seconds``);
2. with events on (a rotation arrives by event within seconds; polling is the
   backstop), the plan with the fewest calls *per second* whose interval,
   stretched as far as the budget needs, stays within ``max_interval``
   (``cache.ttl_seconds``, the bound AWS's agent gives), since the backstop's
   period does not set everyday freshness; if none does, the fewest calls per
   second at whatever interval the budget allows (stretched, and logged so);
3. otherwise, as a last resort, the plan that fits the budget at the shortest
   stretched interval. Stretching is logged at warning level and visible in the
   metrics (``secrets_agent_refresh_interval_seconds`` and the staleness bound).

A throttle also says the fleet is larger than the hint. Two things follow:

* the API is held out of the choice for :data:`HOLD_SECONDS`, doubling (up to
  :data:`MAX_HOLD_SECONDS`) each time it throttles again within twice the last
  hold (a success does not shorten the next hold; a quiet spell does);
* the agent *learns* a fleet size: if calling the API at this agent's planned
  rate ``r`` overran its quota, the fleet holds at least ``quota / r`` agents.
  The planner plans with the larger of the hint and that size, which halves
  every :data:`LEARNED_HALF_LIFE_SECONDS` without throttling so that a fleet
  that shrank goes back to listing. In a fleet whose ``size`` was left at 1 the
  agents that meet a throttle thus move to DescribeSecret for good; those that
  never do keep listing, so ListSecrets stays near its quota (the hint matters).

Start-up is spread too: a fleet started together (a deployment rolling out)
would send every prefetch in the same second. Each agent waits a random delay
in ``[0, window)``, ``window`` being how long the fleet's prefetch calls take
at the fleet's share of the quota, and picks BatchGetSecretValue (20 secrets a
call, 100 calls/s for the account) unless GetSecretValue (one a call, but
10,000/s) spreads the fleet over a much shorter window. A rotation event
reaches the whole fleet at once as well: past the fleet's share of one second of
GetSecretValue, each agent waits a random part of the time the fleet's re-reads
need (:meth:`Planner.event_delay`).

The planner is pure logic: it calls nothing, and takes its clock and random
source as arguments, so its choices are unit-tested on a simulated clock and
driven by the fleet simulation (``bench/fleet.py``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

# Secrets Manager's account-wide request quotas per region (requests per second, AWS's published values).
GET_SECRET_VALUE = "GetSecretValue"
DESCRIBE_SECRET = "DescribeSecret"
LIST_SECRETS = "ListSecrets"
BATCH_GET_SECRET_VALUE = "BatchGetSecretValue"
LIST_SECRET_VERSION_IDS = "ListSecretVersionIds"
ACCOUNT_QUOTAS: Mapping[str, float] = {
    GET_SECRET_VALUE: 10_000.0,
    DESCRIBE_SECRET: 40_000.0,
    LIST_SECRETS: 100.0,
    BATCH_GET_SECRET_VALUE: 100.0,
    # Rotation history (agent/cache/watch.py seeds it at this budget). Not in AWS's published table:
    # planned as a control-plane API at the 50/s those have, which is the cautious reading.
    LIST_SECRET_VERSION_IDS: 50.0,
}
DEFAULT_FLEET_SIZE = 1
# Half of each quota: the rest is for everything else in the account (applications' own SDK
# calls, rotation functions, CI, other fleets), and a fleet may grow past its size hint by 60%
# before reaching 80% of a quota.
DEFAULT_QUOTA_SHARE = 0.5
JITTER = 0.10  # each pass waits interval * U(0.9, 1.1)
HOLD_SECONDS = 300.0  # a throttled API is not planned with for this long
MAX_HOLD_SECONDS = 3600.0
LEARNED_HALF_LIFE_SECONDS = 3600.0  # a fleet size learned from throttling fades at this pace
BATCH_IDS = 20  # BatchGetSecretValue's SecretIdList limit
# Start-up: BatchGetSecretValue unless spreading the fleet over its quota takes longer than this
# and GetSecretValue spreads it faster.
STARTUP_SPREAD_TARGET = 10.0
MAX_STARTUP_WINDOW = 600.0

How = Literal["list", "describe"]
Prefetch = Literal["batch", "get"]


@dataclass(frozen=True)
class PassPlan:
    """What one pass does and what it implies."""

    how: How
    interval: float  # seconds until the next pass (before jitter)
    calls: int  # upstream calls the pass makes (change detection only)
    stretched: bool  # interval above the configured one, to stay within the budget
    reason: str

    @property
    def staleness_bound(self) -> float:
        """The longest a rotation can go unseen by polling under this plan (the jittered interval's top)."""
        return self.interval * (1 + JITTER)

    @property
    def operation(self) -> str:
        """The API this plan spends."""
        return LIST_SECRETS if self.how == "list" else DESCRIBE_SECRET


class Planner:
    """Chooses each pass's plan within this agent's share of the account's quotas."""

    def __init__(
        self,
        *,
        interval: float,
        fleet_size: int = DEFAULT_FLEET_SIZE,
        quota_share: float = DEFAULT_QUOTA_SHARE,
        events: bool = False,
        max_interval: float | None = None,
        quotas: Mapping[str, float] = ACCOUNT_QUOTAS,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.interval = float(interval)
        self.fleet_size = max(1, int(fleet_size))
        self.quota_share = float(quota_share)
        self.events = events
        self.max_interval = max(self.interval, float(max_interval if max_interval is not None else interval))
        self.quotas = dict(quotas)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._held_until: dict[str, float] = {}
        self._holds: dict[str, tuple[float, float]] = {}  # API -> (last hold's length, when it began)
        self._rates: dict[str, float] = {}  # API -> calls per second the last plan using it made
        self._learned = (0.0, 0.0)  # (fleet size implied by a throttle, when)

    # ------------------------------------------------------------------ budgets

    def budget(self, operation: str) -> float:
        """Calls per second this agent may make to ``operation``."""
        return self.quotas[operation] * self.quota_share / self.effective_size()

    def effective_size(self) -> float:
        """The fleet size planned with: the hint, or what throttling implied (fading), whichever is larger."""
        size, since = self._learned
        if size <= self.fleet_size:
            return float(self.fleet_size)
        faded = size / 2 ** ((self._clock() - since) / LEARNED_HALF_LIFE_SECONDS)
        return max(float(self.fleet_size), faded)

    def held(self, operation: str) -> bool:
        """True while ``operation`` is held out of plans after a throttle."""
        return self._clock() < self._held_until.get(operation, 0.0)

    def note_throttled(self, operation: str) -> None:
        """Upstream throttled ``operation``: plan without it for a while (longer if it throttled recently)."""
        now = self._clock()
        if self.held(operation):
            return  # calls already under way when the hold began
        rate = self._rates.get(operation)
        if rate:
            implied = self.quotas[operation] / rate
            if implied > self.effective_size():
                self._learned = (implied, now)
        hold = HOLD_SECONDS
        last = self._holds.get(operation)
        if last is not None and now - last[1] <= 3 * last[0]:  # within twice the last hold after it ended
            hold = min(MAX_HOLD_SECONDS, 2 * last[0])
        self._holds[operation] = (hold, now)
        self._held_until[operation] = now + hold

    def hold_for(self, operation: str, seconds: float) -> None:
        """Keep ``operation`` held for at least ``seconds`` more (a throttle's doubling is left as it was)."""
        self._held_until[operation] = max(self._held_until.get(operation, 0.0), self._clock() + seconds)

    # ------------------------------------------------------------------ passes

    def plan(self, cached: int, list_calls: int | None = None) -> PassPlan:
        """The plan for a pass over ``cached`` secrets; ``list_calls`` is what listing them costs."""
        listing = max(1, list_calls if list_calls is not None else math.ceil(cached / 100))
        costs: dict[How, int] = {"list": listing, "describe": max(1, cached)}
        operations: dict[How, str] = {"list": LIST_SECRETS, "describe": DESCRIBE_SECRET}
        open_ = [how for how in costs if not self.held(operations[how])] or list(costs)
        # The shortest interval each plan can keep within the budget.
        floor = {how: max(self.interval, costs[how] / self.budget(operations[how])) for how in open_}
        fits = [how for how in open_ if floor[how] <= self.interval]
        held = " (ListSecrets held after throttling)" if self.held(LIST_SECRETS) else ""
        if self.events:
            backstop = [how for how in open_ if floor[how] <= self.max_interval]
            if backstop:
                how = min(backstop, key=lambda h: (costs[h] / floor[h], costs[h]))
                return self._made(how, floor[how], costs[how], "events on: fewest calls per second" + held)
            how = min(open_, key=lambda h: (costs[h] / floor[h], costs[h]))
            return self._made(how, floor[how], costs[how], "events on: no backstop fits within the TTL" + held)
        if fits:
            how = min(fits, key=lambda h: (costs[h], h != "list"))
            return self._made(how, self.interval, costs[how], "fewest calls within the budget" + held)
        how = min(open_, key=lambda h: (floor[h], costs[h]))
        return self._made(how, floor[how], costs[how], "no plan fits the budget at the configured interval" + held)

    def _made(self, how: How, interval: float, calls: int, reason: str) -> PassPlan:
        plan = PassPlan(how, interval, calls, stretched=interval > self.interval * (1 + 1e-9), reason=reason)
        self._rates[plan.operation] = calls / interval
        return plan

    def first_wait(self, interval: float) -> float:
        """The wait before the first pass: ``interval * U(0.1, 1.1)``.

        Agents that finished prefetch together (a start-up window shorter than a stretched
        interval) then pass at phases spread over the whole interval, not in the same tenth of it.
        """
        return interval * self._rng.uniform(JITTER, 1 + JITTER)

    def event_delay(self) -> float:
        """A random delay before acting on a rotation event, which reaches the whole fleet at once.

        Each agent then makes a DescribeSecret and a GetSecretValue. GetSecretValue's bucket
        holds one second of quota; the fleet takes its share of that burst at once and
        spreads the rest at its share of the rate: ``fleet_size / (quota * quota_share) - 1``
        seconds (none for a fleet whose re-reads fit in its share of the burst), with the fleet
        size throttling taught if that is larger than the hint.
        """
        window = self.effective_size() / (self.quotas[GET_SECRET_VALUE] * self.quota_share) - 1
        return self._rng.uniform(0, window) if window > 0 else 0.0

    def jittered(self, interval: float) -> float:
        """``interval`` * U(0.9, 1.1): a fleet started together drifts apart instead of calling in step."""
        return interval * self._rng.uniform(1 - JITTER, 1 + JITTER)

    # ------------------------------------------------------------------ start-up

    def startup_windows(self, ids: int) -> dict[Prefetch, float]:
        """Seconds the fleet's prefetch of ``ids`` secrets each takes, per API, at the fleet's share."""
        # The fleet's calls over the fleet's rate: fleet_size * calls / (quota * quota_share).
        batches = math.ceil(ids / BATCH_IDS)
        return {
            "batch": batches / self.budget(BATCH_GET_SECRET_VALUE),
            "get": ids / self.budget(GET_SECRET_VALUE),
        }

    def prefetch_via(self, ids: int) -> Prefetch:
        """BatchGetSecretValue, unless it is held, or GetSecretValue spreads the fleet's start much faster."""
        if self.held(BATCH_GET_SECRET_VALUE):
            return "get"
        windows = self.startup_windows(ids)
        if windows["batch"] > STARTUP_SPREAD_TARGET and windows["get"] < windows["batch"]:
            return "get"
        return "batch"

    def startup_delay(self, ids: int) -> float:
        """A random delay before prefetch, so the fleet's first calls spread over the window they need."""
        if self.fleet_size <= 1 or ids <= 0:
            return 0.0
        window = min(MAX_STARTUP_WINDOW, self.startup_windows(ids)[self.prefetch_via(ids)])
        return self._rng.uniform(0, window)
