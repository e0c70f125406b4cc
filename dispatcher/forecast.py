"""The forecast: when queued work will be done under the limits, resets and backlog.

Pure: no Redis, no network, no clock. :mod:`dispatcher.forecast_state` reads what is used
now, the backlog and the cooldowns, and builds a :class:`World`; :func:`simulate` plays the
jobs forward the way the service will run them, one start at a time:

- every limit of every target (rolling windows with the quota engine's timing margin,
  day/month counters reset at midnight in the provider's time zone, provider-wide limits
  shared by the provider's models): a job starts when the cost estimate the workers
  reserve fits (with the batch share of any reserve), and the limit keeps what such calls
  reported lately (the reconciled usage), or the estimate when there is no history;
- each target's concurrency, a slot held ``latency_s`` per call;
- the routing rule itself (:func:`dispatcher.routing.choose_target`): the preferred target
  if it is free within the preference delay, else the one free soonest — so a spent day
  limit spills over to the next target of the route, as it does live;
- waiting sets in score order (priorities and fairness included): a set's head blocks
  what is behind it, as the pump's does.

Event-based: each step jumps straight to the next moment a head can start (a window
freeing, a slot, a reset), so a 50,000-job batch spanning days takes well under a second
or two. Windows are kept as time-sorted logs with running sums (bisect, no scans).

    >>> world = World(now=0.0, limits={}, targets={"p/m": TargetRule("p/m", "p", 2, ())},
    ...               latency_s=1.0)
    >>> f = simulate(world, [SimJob(1.0, ("p/m",), (Cost(1),), "new")] * 4)
    >>> f.finish_at, f.targets
    (2.0, {'p/m': 4})
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from dispatcher.config.models import Per, Unit, zone
from dispatcher.routing import choose_target
from workers.quota.costs import Cost
from workers.quota.limits import Period, calendar_period

NEW = "new"
"""The batch label of the jobs being planned (the backlog keeps its batch ids)."""

_MAX_SETTLE = 16
"""Rounds of "every limit agrees on this start time" before giving up (never reached in
practice: each round moves the time forward to a point some limit accepted)."""


@dataclass(frozen=True)
class LimitRule:
    """One limit as the forecast charges it (``cap`` in charged units, batch share).

    ``key`` is shared by every target a limit applies to (a provider-wide limit)."""

    key: str
    label: str
    unit: Unit
    per: Per
    cap: int
    window_s: float = 0.0  # rolling window with the engine's timing margin; 0: calendar
    tz: str = "UTC"


@dataclass(frozen=True)
class TargetRule:
    key: str
    provider: str
    concurrency: int
    limits: tuple[str, ...]  # keys into World.limits


@dataclass
class World:
    """Everything the forecast starts from. Times are epoch seconds (server clock)."""

    now: float
    limits: dict[str, LimitRule]
    targets: dict[str, TargetRule]
    latency_s: float = 2.0
    preference_delay_s: float = 2.0
    rolling_seed: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Charges still in each rolling window: (time, cost), oldest first."""
    calendar_used: dict[str, int] = field(default_factory=dict)
    """What each calendar limit has used in its period containing ``now``."""
    cooldown_until: dict[str, float] = field(default_factory=dict)
    """A target (or its provider) refuses everything until then (a 429's Retry-After)."""
    busy_until: dict[str, list[float]] = field(default_factory=dict)
    """When each call already in flight on a target ends."""


@dataclass(frozen=True)
class SimJob:
    """One job: its score in its waiting set, its targets (preference order) and its cost
    on each (``None``: that target can never take it).

    ``costs`` is what a worker reserves (the upper-bound estimate: it must fit); ``charges``
    what the limits keep once the call is reconciled with the upstream's ``usage``
    (default: the estimate). Tokens and neurons only: requests are what they are."""

    score: float
    targets: tuple[str, ...]
    costs: tuple[Cost | None, ...]
    batch: str = NEW
    charges: tuple[Cost | None, ...] | None = None


@dataclass(frozen=True)
class ResetWait:
    """Jobs that had to wait for a calendar reset: the first of them starts at ``at``."""

    label: str
    at: float
    tz: str
    jobs: int


@dataclass
class Forecast:
    now: float
    jobs: int
    finish_at: float | None
    """When the last job of the planned batch ends (None: nothing to do, or never)."""
    targets: dict[str, int]
    never: int = 0
    """Jobs that no target can ever take (their cost exceeds a limit of every target)."""
    ahead: int = 0
    """Backlog jobs served before the planned batch's last job."""
    binding: list[tuple[str, float]] = field(default_factory=list)
    """Limits (or "concurrency") that paced the queue until the batch's last start (the
    backlog ahead included), with the seconds they added, most binding first."""
    resets: list[ResetWait] = field(default_factory=list)
    """Calendar resets the batch waits for, in time order."""
    batch_finish: dict[str, float] = field(default_factory=dict)
    """When each batch in the simulation (backlog included) ends."""
    finishes: list[float] = field(default_factory=list, repr=False)
    """End time of each of the planned batch's served jobs, sorted."""

    def done_by(self, t: float) -> int:
        """How many of the planned batch's jobs end by ``t``."""
        return bisect_right(self.finishes, t)

    def meets(self, deadline: float) -> bool:
        """Every job of the planned batch ends by ``deadline``."""
        return self.finish_at is not None and self.finish_at <= deadline and not self.never


class _Rolling:
    """A sliding log with running sums: ``times`` sorted, ``cum[i]`` = cost of 0..i."""

    __slots__ = ("times", "cum", "cap", "win")

    def __init__(self, cap: int, win: float, seed: Iterable[tuple[float, int]]):
        self.cap, self.win = cap, win
        self.times: list[float] = []
        self.cum: list[int] = []
        for t, c in sorted(seed):
            self.add(t, c)

    def add(self, t: float, cost: int) -> None:
        self.times.append(t)
        self.cum.append((self.cum[-1] if self.cum else 0) + cost)

    def earliest(self, t: float, cost: int) -> float:
        """The first time >= t when ``cost`` fits (the log holds nothing later than t)."""
        a = bisect_right(self.times, t - self.win)  # entries [a, n) are in the window
        base = self.cum[a - 1] if a else 0
        used = (self.cum[-1] if self.cum else 0) - base
        need = used + cost - self.cap
        if need <= 0:
            return t
        j = bisect_left(self.cum, base + need, lo=a)
        return self.times[j] + self.win


class _Calendar:
    """A day or month counter in the provider's time zone; later periods start empty."""

    __slots__ = ("cap", "per", "tz", "period", "used")

    def __init__(self, cap: int, per: Per, tz: str, now: float, used: int):
        self.cap, self.per, self.tz = cap, per, tz
        self.period: Period = calendar_period(per, tz, now)
        self.used = used

    def _used_at(self, t: float) -> tuple[Period, int]:
        if self.period.contains(t):
            return self.period, self.used
        return calendar_period(self.per, self.tz, t), 0

    def earliest(self, t: float, cost: int) -> float:
        period, used = self._used_at(t)
        return t if used + cost <= self.cap else float(period.end)

    def add(self, t: float, cost: int) -> None:
        self.period, self.used = self._used_at(t)
        self.used += cost


@dataclass
class _Set:
    jobs: list[SimJob]
    pos: int = 0
    providers: frozenset[str] = frozenset()
    pick: tuple[float, float, int, str | None] | None = None  # start, score, target, cause


class _Sim:
    def __init__(self, world: World):
        self.w = world
        self.now = world.now
        self.meters: dict[str, _Rolling | _Calendar] = {}
        for key, rule in world.limits.items():
            if rule.window_s:
                self.meters[key] = _Rolling(rule.cap, rule.window_s,
                                            world.rolling_seed.get(key, ()))
            else:
                self.meters[key] = _Calendar(rule.cap, rule.per, rule.tz, world.now,
                                             world.calendar_used.get(key, 0))
        self.slots: dict[str, list[float]] = {}
        for key, rule in world.targets.items():
            busy = sorted(world.busy_until.get(key, ()))[-rule.concurrency:]
            heapq.heapify(busy)
            self.slots[key] = busy

    def start_on(self, target: str, cost: Cost) -> tuple[float, str | None]:
        """Earliest start of a job of ``cost`` on ``target`` from now, and what set it
        (a limit's label, "concurrency", "cooldown" or None when it can start now)."""
        rule = self.w.targets[target]
        t, cause = self.now, None
        cool = self.w.cooldown_until.get(target, 0.0)
        if cool > t:
            t, cause = cool, "cooldown"
        slots = self.slots[target]
        if len(slots) >= rule.concurrency and slots[0] > t:
            t, cause = slots[0], "concurrency"
        for _ in range(_MAX_SETTLE):
            moved = False
            for key in rule.limits:
                lim = self.w.limits[key]
                nt = self.meters[key].earliest(t, cost.of(lim.unit))
                if nt > t:
                    t, cause, moved = nt, lim.label, True
            if not moved:
                return t, cause
        return t, cause

    def charge(self, target: str, cost: Cost, t: float) -> None:
        rule = self.w.targets[target]
        for key in rule.limits:
            self.meters[key].add(t, cost.of(self.w.limits[key].unit))
        slots = self.slots[target]
        if len(slots) >= rule.concurrency:
            heapq.heapreplace(slots, t + self.w.latency_s)
        else:
            heapq.heappush(slots, t + self.w.latency_s)

    def pick(self, job: SimJob) -> tuple[float, int, str | None] | None:
        """The routing rule on the head job: (start, target index, cause) or None."""
        starts: list[tuple[float, str | None] | None] = []
        for target, cost in zip(job.targets, job.costs, strict=True):
            if cost is None or target not in self.w.targets or not self._fits(target, cost):
                starts.append(None)
            else:
                starts.append(self.start_on(target, cost))
        delays = [None if s is None else s[0] - self.now for s in starts]
        idx = choose_target(delays, self.w.preference_delay_s)
        if idx is None:
            return None
        start, cause = starts[idx]  # type: ignore[misc]
        return start, idx, cause

    def _fits(self, target: str, cost: Cost) -> bool:
        return all(cost.of(self.w.limits[k].unit) <= self.w.limits[k].cap
                   for k in self.w.targets[target].limits)


def simulate(world: World, jobs: Sequence[SimJob]) -> Forecast:
    """Play ``jobs`` (the backlog and the planned batch, each with its score) forward."""
    sim = _Sim(world)
    by_targets: dict[tuple[str, ...], list[SimJob]] = defaultdict(list)
    for job in jobs:
        by_targets[job.targets].append(job)
    sets = []
    for targets, members in by_targets.items():
        members.sort(key=lambda j: j.score)
        providers = frozenset(world.targets[t].provider for t in targets if t in world.targets)
        sets.append(_Set(members, providers=providers))

    planned = sum(1 for j in jobs if j.batch == NEW)
    calendar_rules = {r.label: r for r in world.limits.values() if not r.window_s}
    served: dict[str, int] = defaultdict(int)
    finishes: list[float] = []
    batch_finish: dict[str, float] = {}
    binding: dict[str, float] = defaultdict(float)
    resets: list[list] = []  # [rule, at, jobs starting at or after it]
    never = ahead = 0
    last_event = world.now
    changed: frozenset[str] | None = None  # providers charged by the last start
    while True:
        best: _Set | None = None
        for s in sets:
            stale = changed is None or bool(s.providers & changed)
            while s.pos < len(s.jobs) and (s.pick is None or stale):
                head = s.jobs[s.pos]
                choice = sim.pick(head)
                if choice is not None:
                    s.pick, stale = (choice[0], head.score, choice[1], choice[2]), False
                    break
                s.pos += 1  # no target can ever take it: it ends at once (no_target)
                s.pick = None
                never += head.batch == NEW
            if s.pos < len(s.jobs) and (best is None or s.pick[:2] < best.pick[:2]):
                best = s
        if best is None:
            break
        start, _score, idx, cause = best.pick  # type: ignore[misc]
        job = best.jobs[best.pos]
        target = job.targets[idx]
        cost = (job.charges or job.costs)[idx]
        assert cost is not None
        changed = frozenset({world.targets[target].provider}) if start <= sim.now else None
        sim.now = max(sim.now, start)
        sim.charge(target, cost, sim.now)
        end = sim.now + world.latency_s
        batch_finish[job.batch] = max(batch_finish.get(job.batch, end), end)
        if cause is not None and sim.now > last_event and len(finishes) < planned:
            binding[cause] += sim.now - last_event  # what paces the queue up to our end
        if job.batch == NEW:
            served[target] += 1
            finishes.append(end)
            rule = calendar_rules.get(cause or "")
            if rule is not None and _is_reset(rule, sim.now) and \
                    not any(r[0] is rule and r[1] == sim.now for r in resets):
                resets.append([rule, sim.now, 0])
            for r in resets:
                r[2] += 1
        elif len(finishes) < planned:
            ahead += 1
        last_event = sim.now
        best.pos += 1
        best.pick = None
    finishes.sort()
    return Forecast(
        now=world.now,
        jobs=planned,
        finish_at=finishes[-1] if finishes else None,
        targets=dict(sorted(served.items(), key=lambda kv: -kv[1])),
        never=never,
        ahead=ahead,
        binding=sorted(binding.items(), key=lambda kv: -kv[1]),
        resets=[ResetWait(rule.label, at, rule.tz, n) for rule, at, n in resets],
        batch_finish=batch_finish,
        finishes=finishes,
    )


def _is_reset(rule: LimitRule, t: float) -> bool:
    """Whether ``t`` is the start of a period of ``rule`` (a job waited for this reset)."""
    return calendar_period(rule.per, rule.tz, t).start == t


# ----------------------------------------------------------------------------- words

def clock(t: float, now: float, tz: tzinfo | None = None) -> str:
    """``"18:00 today"``, ``"00:40 tomorrow"``, ``"2026-12-03 09:00"`` (local time)."""
    at = datetime.fromtimestamp(t, tz).astimezone(tz)
    ref = datetime.fromtimestamp(now, tz).astimezone(tz)
    days = (at.date() - ref.date()).days
    hm = at.strftime("%H:%M:%S" if t - now < 600 else "%H:%M")
    if days == 0:
        return f"{hm} today"
    if days == 1:
        return f"{hm} tomorrow"
    return at.strftime("%Y-%m-%d %H:%M")


def reset_text(reset: ResetWait) -> str:
    """``"groq/llama-3.1-8b-instant: 14400 requests/day's reset at 00:00 UTC"``."""
    at = datetime.fromtimestamp(reset.at, zone(reset.tz))
    where = "UTC" if reset.tz == "UTC" else reset.tz
    return f"{reset.label} reset at {at.strftime('%H:%M')} {where}"


def summary(f: Forecast, deadline: float | None = None, tz: tzinfo | None = None) -> str:
    """One line: how much by the deadline, which reset the rest waits for, when it is done.

    ``"3,100 jobs by 18:00 today; the rest after groq/...: 14400 requests/day reset at
    00:00 UTC; done about 00:40 tomorrow"``"""
    if f.jobs == 0:
        return "nothing to do"
    parts: list[str] = []
    if f.finish_at is None:
        return f"none of the {f.jobs:,} jobs can be served by any enabled target"
    if deadline is not None:
        n = f.done_by(deadline)
        if n < len(f.finishes):
            parts.append(f"{n:,} of {f.jobs:,} jobs by {clock(deadline, f.now, tz)}")
    if f.resets:
        first = f.resets[0]
        if not parts:
            parts.append(f"{f.done_by(first.at):,} jobs by {clock(first.at, f.now, tz)}")
        parts.append(f"the rest after {reset_text(first)}")
    parts.append(f"done about {clock(f.finish_at, f.now, tz)} "
                 f"(in {_span(f.finish_at - f.now)})")
    text = "; ".join(parts)
    if f.ahead:
        text += f"; {f.ahead:,} queued jobs go first"
    if f.binding:
        text += f"; bound by {f.binding[0][0]}"
    if f.never:
        text += f"; {f.never:,} jobs fit no target's limits"
    return text


def _span(seconds: float) -> str:
    from dispatcher.commands.quota import humanize  # the one duration format of the CLI

    return humanize(math.ceil(seconds))


def as_json(f: Forecast, deadline: float | None = None) -> dict:
    """The ``--json`` document: ``finish_at`` (Unix seconds), ``targets`` and the rest."""
    doc = {
        "now": round(f.now, 3),
        "jobs": f.jobs,
        "finish_at": None if f.finish_at is None else round(f.finish_at, 3),
        "duration_s": None if f.finish_at is None else round(f.finish_at - f.now, 3),
        "targets": f.targets,
        "never": f.never,
        "ahead": f.ahead,
        "binding": [{"limit": label, "wait_s": round(s, 3)} for label, s in f.binding],
        "resets": [{"limit": r.label, "at": r.at, "timezone": r.tz, "jobs_after": r.jobs}
                   for r in f.resets],
        "summary": summary(f, deadline),
    }
    if deadline is not None:
        doc["deadline"] = deadline
        doc["by_deadline"] = f.done_by(deadline)
        doc["meets_deadline"] = f.meets(deadline)
    return doc
