"""Pure quota arithmetic: key names, windows, calendar periods, waits, labels.

Nothing here talks to Redis, so every edge (DST, Feb 29, month end, the exact wait after a
refusal) is tested without a server. :mod:`workers.quota.engine` and the Lua scripts use
these definitions; the Lua code mirrors :func:`rolling_wait_us` and :func:`member`.

    >>> from dispatcher.config.models import Per
    >>> window_us(Per.minute, margin_ms=20)        # 60 s plus a 20 ms margin
    60020000
    >>> calendar_period(Per.day, "UTC", 1_795_392_000).key   # 2026-11-23 00:00:00 UTC
    '2026-11-23'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from dispatcher.config.models import Limit, Per, Unit
from dispatcher.config.models import zone as tz_zone
from workers.quota.costs import NEURON_SCALE

US = 1_000_000
"""Microseconds per second: the scripts keep server time in integer microseconds."""

CALENDAR_SLACK_S = 86_400
"""A calendar counter lives until its period ends plus a day (late reconciles still land)."""

ROLLING_TTL_SLACK_MS = 1_000
"""A sliding log outlives its window by this much, so no TTL ever cuts a refill short."""

SCOPE_PROVIDER = "provider"
SCOPE_MODEL = "model"

_UNIT_CODE = {Unit.requests: "r", Unit.tokens: "t", Unit.neurons: "n"}


def key_prefix(namespace: str, simulated: bool, provider: str) -> str:
    """Every key of one provider shares the hash tag ``{provider}``: one Cluster slot, so a
    multi-key script never meets ``CROSSSLOT``; simulated traffic has its own namespace."""
    if "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace {namespace!r} must not contain braces (hash tags)")
    mode = "sim" if simulated else "live"
    return f"{namespace}:q:{mode}:{{{provider}}}:"


def fingerprint_key(namespace: str) -> str:
    return f"{namespace}:q:limits"


def window_us(per: Per, margin_ms: float, margin_pct: float = 0.0) -> int:
    """Rolling window plus the timing margin (``margin_ms`` + ``margin_pct`` % of the
    window), capped at 1% of the window, in microseconds.

    The margin absorbs send-time jitter: requests spaced by ``T + margin`` at reservation
    still arrive at least ``T`` apart upstream when the send delay varies by < margin. The
    proportional part buys longer windows a wider margin at the same relative cost."""
    t_us = per.seconds * US
    return t_us + int(min(margin_ms * 1000 + t_us * margin_pct / 100, t_us / 100))


def rolling_ttl_ms(win_us: int) -> int:
    """TTL given to a sliding log: two windows plus slack. The script refreshes it only when
    less than a window (plus 1 s) remains, so it always outlives the newest entry (which
    leaves at ``score + window``, never stamped after now) yet costs no call on most grants."""
    return math.ceil(2 * win_us / 1000) + ROLLING_TTL_SLACK_MS


@dataclass(frozen=True)
class Period:
    """One calendar period: its key suffix and ``[start, end)`` in epoch seconds."""

    key: str
    start: int
    end: int

    def contains(self, epoch: float) -> bool:
        return self.start <= epoch < self.end


def _local_midnight(tz: tzinfo, year: int, month: int, day: int) -> int:
    # fold=0 maps a midnight skipped by DST to the first instant that exists that day
    # and an ambiguous midnight to its first occurrence: both are where the day starts.
    return int(datetime(year, month, day, tzinfo=tz).timestamp())


def calendar_period(per: Per, tz: str, epoch: float) -> Period:
    """The day or month containing ``epoch`` in time zone ``tz`` (DST aware: a local day
    may last 23 or 25 hours). Start is inclusive, end exclusive."""
    zone = tz_zone(tz)  # an IANA name or a fixed UTC offset ("+05:47"), cached
    local = datetime.fromtimestamp(epoch, zone)
    if per is Per.day:
        start = _local_midnight(zone, local.year, local.month, local.day)
        nxt = local.date() + timedelta(days=1)
        end = _local_midnight(zone, nxt.year, nxt.month, nxt.day)
        return Period(local.strftime("%Y-%m-%d"), start, end)
    if per is Per.month:
        start = _local_midnight(zone, local.year, local.month, 1)
        y, m = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return Period(local.strftime("%Y-%m"), start, _local_midnight(zone, y, m, 1))
    raise ValueError(f"{per} is a rolling window, not a calendar period")


def next_reset(per: Per, tz: str, epoch: float, margin_ms: float = 0.0) -> float:
    """When a limit of this period next resets: the calendar period's end, or for a
    rolling window the moment everything charged now has left it."""
    if per.rolling:
        return epoch + window_us(per, margin_ms) / US
    return float(calendar_period(per, tz, epoch).end)


def limit_text(limit: Limit, sep: str = "") -> str:
    """``"30 requests/minute"``, ``"1 request/day"``; ``sep=","``: ``"14,400 requests/day"``."""
    unit = limit.unit.value[:-1] if limit.limit == 1 else limit.unit.value
    return f"{limit.limit:{sep}} {unit}/{limit.per.value}"


def limit_label(provider: str, model_id: str | None, limit: Limit) -> str:
    """``"groq/llama-3.1-8b-instant: 6000 tokens/minute"`` or ``"openrouter: 50 requests/day"``."""
    who = provider if model_id is None else f"{provider}/{model_id}"
    return f"{who}: {limit_text(limit)}"


def charge_scale(unit: Unit) -> int:
    """Units charged per configured unit: limits are configured in neurons but costs are
    counted in milli-neurons (``Cost.milli_neurons``), so Redis stays in integers."""
    return NEURON_SCALE if unit is Unit.neurons else 1


def unit_code(unit: Unit) -> str:
    return _UNIT_CODE[unit]


def member(cost: int, token: str) -> str:
    """A sliding-log entry: ``"<cost>:<reservation token>"``; the cost leads so the script
    reads it with one pattern match and needs no companion hash."""
    return f"{cost}:{token}"


def member_cost(m: str | bytes) -> int:
    if isinstance(m, bytes):
        m = m.decode()
    return int(m.split(":", 1)[0])


def rolling_used(entries: Iterable[tuple[int, int]], now_us: int, win_us: int) -> int:
    """Units charged in the window ending now: entries ``(score_us, cost)`` with
    ``score > now - window`` (the window is half-open)."""
    cutoff = now_us - win_us
    return sum(c for s, c in entries if s > cutoff)


def rolling_wait_us(
    entries: Iterable[tuple[int, int]], cost: int, limit: int, now_us: int, win_us: int
) -> int:
    """Exact wait before ``cost`` fits: walk entries oldest first, accumulating what leaves
    the window, until ``used - freed + cost <= limit``; the wait is until that entry
    leaves. 0 when it fits now; raises ValueError when ``cost > limit`` (never fits)."""
    if cost > limit:
        raise ValueError(f"cost {cost} exceeds the limit {limit}: it can never fit")
    cutoff = now_us - win_us
    live = sorted((s, c) for s, c in entries if s > cutoff)
    need = sum(c for _, c in live) + cost - limit
    if need <= 0:
        return 0
    freed = 0
    for score, c in live:
        freed += c
        if freed >= need:
            return score + win_us - now_us
    raise AssertionError("unreachable: freeing every entry always makes room")


@dataclass(frozen=True)
class LimitSpec:
    """One limit as the engine charges it: where it lives and how it reads.

    ``base`` is the key (a sliding-log ZSET for rolling windows, the prefix of per-period
    counters for calendar ones)."""

    scope: str
    model_id: str | None
    limit: Limit
    label: str
    base: str

    @property
    def rolling(self) -> bool:
        return self.limit.per.rolling

    @property
    def cap(self) -> int:
        """The limit in charged units (``Cost.of(unit)``: milli-neurons for neurons)."""
        return self.limit.limit * charge_scale(self.limit.unit)


def limit_specs(
    prefix: str, provider: str, model_id: str, scoped_limits: Iterable[tuple[str, Limit]]
) -> list[LimitSpec]:
    """Key and label of every limit of a target. Two limits of one scope with the same
    unit and period would share a key; only the tighter one is kept (it implies the other)."""
    tightest: dict[tuple[str, Unit, Per], Limit] = {}
    for scope, lim in scoped_limits:
        k = (scope, lim.unit, lim.per)
        if k not in tightest or lim.limit < tightest[k].limit:
            tightest[k] = lim
    out = []
    for (scope, unit, per), lim in tightest.items():
        if scope == SCOPE_PROVIDER:
            out.append(
                LimitSpec(scope, None, lim, limit_label(provider, None, lim),
                          f"{prefix}p:{unit.value}:{per.value}")
            )
        else:
            out.append(
                LimitSpec(scope, model_id, lim, limit_label(provider, model_id, lim),
                          f"{prefix}m:{model_id}:{unit.value}:{per.value}")
            )
    return out
