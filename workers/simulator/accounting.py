"""The simulator's own quota windows: what it enforces, and how it counts broken promises.

One :class:`Meter` per configured limit (a provider-wide limit is one meter shared by all
of that provider's models). A request is *over-limit* when, counting it, some window
would hold more than ``L`` units. Only windows ending at the new arrival can grow, so
checking the window ``(now - W, now]`` is enough.

The contract lets arrivals come up to ``tolerance_s`` (50 ms) closer together than the
sender spaced them, so a rolling window of ``T`` seconds is judged as ``T - tolerance``
(half-open). Enforcement uses the same judgement, so a limit 429 from the simulator
always means a broken promise, and jitter the contract allows is never punished.
Refused requests consume nothing (as on real upstreams); with ``enforce=False`` an
over-limit request is answered and consumes like any other.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from dispatcher.config import Config
from dispatcher.config.models import Limit, Per, Unit, zone

Clock = Callable[[], float]


@dataclass(frozen=True)
class Units:
    """What one request consumes: 1 request, its reported tokens, its neurons."""

    tokens: int = 0
    neurons: float = 0.0
    requests: int = 1

    def of(self, unit: Unit) -> float:
        if unit is Unit.requests:
            return self.requests
        return self.tokens if unit is Unit.tokens else self.neurons


@dataclass(frozen=True)
class LimitHit:
    """A limit that refused (or would refuse) a request, with an honest retry time."""

    provider: str
    model: str | None  # None: provider-wide
    unit: Unit
    per: Per
    limit: int
    used: float
    requested: float
    retry_after: float | None  # seconds until it would pass; None: it never can
    reset_in: float  # seconds until the window is fully replenished

    @property
    def calendar(self) -> bool:
        return not self.per.rolling


@dataclass(frozen=True)
class LimitView:
    """One limit's state right now, for rate-limit headers and stats."""

    provider: str
    model: str | None
    unit: Unit
    per: Per
    limit: int
    used: float
    reset_in: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used)


def next_boundary(now: float, per: Per, tz: ZoneInfo) -> float:
    """Epoch seconds of the next calendar boundary (midnight / 1st of month) in ``tz``."""
    dt = datetime.fromtimestamp(now, tz)
    if per is Per.day:
        nxt = datetime.combine(dt.date() + timedelta(days=1), dtime(0), tzinfo=tz)
    else:
        y, m = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        nxt = datetime(y, m, 1, tzinfo=tz)
    return nxt.timestamp()


def period_key(now: float, per: Per, tz: ZoneInfo) -> tuple[int, ...]:
    dt = datetime.fromtimestamp(now, tz)
    return (dt.year, dt.month, dt.day) if per is Per.day else (dt.year, dt.month)


@dataclass
class Meter:
    """One configured limit: a sliding log (rolling) or a period counter (calendar)."""

    provider: str
    model: str | None
    limit: Limit
    tz: ZoneInfo
    tolerance_s: float
    over_limit: int = 0
    _events: deque[tuple[float, float]] = field(default_factory=deque)
    _total: float = 0.0
    _period: tuple[int, ...] | None = None

    @property
    def window(self) -> float:
        return max(0.0, self.limit.per.seconds - self.tolerance_s)

    def used(self, now: float) -> float:
        if self.limit.per.rolling:
            edge = now - self.window
            while self._events and self._events[0][0] <= edge:
                self._total -= self._events.popleft()[1]
            if not self._events:
                self._total = 0.0
            return self._total
        if self._period != period_key(now, self.limit.per, self.tz):
            return 0.0
        return self._total

    def add(self, now: float, amount: float) -> None:
        if self.limit.per.rolling:
            self.used(now)
            self._events.append((now, amount))
            self._total += amount
            return
        key = period_key(now, self.limit.per, self.tz)
        if self._period != key:
            self._period, self._total = key, 0.0
        self._total += amount

    def reset_in(self, now: float) -> float:
        """Seconds until this limit is fully replenished."""
        if not self.limit.per.rolling:
            return next_boundary(now, self.limit.per, self.tz) - now
        if self.used(now) <= 0:
            return 0.0
        return max(0.0, self._events[-1][0] + self.window - now)

    def retry_after(self, now: float, amount: float) -> float | None:
        """Seconds until ``amount`` more would fit; None when it never can."""
        if amount > self.limit.limit:
            return None
        need = self.used(now) + amount - self.limit.limit
        if need <= 0:
            return 0.0
        if not self.limit.per.rolling:
            return next_boundary(now, self.limit.per, self.tz) - now
        freed = 0.0
        for t, units in self._events:
            freed += units
            if freed >= need:
                return max(0.0, t + self.window - now)
        return self.window  # unreachable: the whole log frees everything

    def check(self, now: float, units: Units) -> LimitHit | None:
        amount = units.of(self.limit.unit)
        used = self.used(now)
        if used + amount <= self.limit.limit:
            return None
        return LimitHit(
            self.provider, self.model, self.limit.unit, self.limit.per, self.limit.limit,
            used, amount, self.retry_after(now, amount), self.reset_in(now),
        )

    def view(self, now: float) -> LimitView:
        return LimitView(
            self.provider, self.model, self.limit.unit, self.limit.per, self.limit.limit,
            self.used(now), self.reset_in(now),
        )

    def clear(self) -> None:
        self._events.clear()
        self._total, self._period, self.over_limit = 0.0, None, 0


class Ledger:
    """Every configured limit of every target, behind one lock (arrival order = log order)."""

    def __init__(self, config: Config, tolerance_s: float = 0.05, clock: Clock = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._meters: dict[str, list[Meter]] = {}
        self._all: list[Meter] = []
        for name, pc in config.providers.items():
            tz = zone(pc.timezone)
            shared = [Meter(name, None, lim, tz, tolerance_s) for lim in pc.limits]
            self._all += shared
            for m in pc.models:
                own = [Meter(name, m.id, lim, tz, tolerance_s) for lim in m.limits]
                self._all += own
                self._meters[f"{name}/{m.id}"] = shared + own

    def admit(self, target: str, units: Units, enforce: bool = True) -> list[LimitHit]:
        """Judge one arrival now. Returns the limits it breaks (empty: admitted).

        Broken limits count one over-limit each. The request consumes its units when it
        breaks nothing, or always when ``enforce`` is off (it is then answered anyway).
        """
        with self._lock:
            now = self.clock()
            meters = self._meters[target]
            hits: list[LimitHit] = []
            for meter in meters:
                hit = meter.check(now, units)
                if hit is not None:
                    meter.over_limit += 1
                    hits.append(hit)
            if not hits or not enforce:
                for meter in meters:
                    meter.add(now, units.of(meter.limit.unit))
            return hits

    def views(self, target: str) -> list[LimitView]:
        with self._lock:
            now = self.clock()
            return [m.view(now) for m in self._meters[target]]

    def hypothetical(self, target: str, unit: Unit, per: Per, retry_after: float | None
                     ) -> LimitHit:
        """A hit for an injected 429: the target's configured limit of that period if any."""
        with self._lock:
            now = self.clock()
            meters = [m for m in self._meters[target] if m.limit.per is per]
            meters.sort(key=lambda m: m.limit.unit is not unit)
            tz = meters[0].tz if meters else ZoneInfo("UTC")
            lim = meters[0].limit if meters else Limit(unit=unit, limit=1, per=per)
            provider, _, model = target.partition("/")
            reset = per.seconds if per.rolling else next_boundary(now, per, tz) - now
            wait = retry_after if retry_after is not None else reset
            return LimitHit(provider, model, lim.unit, per, lim.limit, lim.limit, 1, wait, reset)

    def stats(self) -> list[dict[str, object]]:
        with self._lock:
            now = self.clock()
            return [
                {
                    "provider": m.provider,
                    "model": m.model,
                    "unit": m.limit.unit.value,
                    "limit": m.limit.limit,
                    "per": m.limit.per.value,
                    "used": round(m.used(now), 3),
                    "over_limit": m.over_limit,
                }
                for m in self._all
            ]

    def reset(self) -> None:
        with self._lock:
            for m in self._all:
                m.clear()
