"""Why a batch is not moving: which limit holds each of its targets, and until when.

``dispatch run`` prints this when no job moved for a minute, so a run waiting hours for a
daily reset says so instead of looking hung. :func:`explain` is the pure rule;
:func:`target_waits` reads Redis; :class:`StallWatch` decides when to say it.

    >>> explain([TargetWait("groq/m", False, 3600.0, "requests/day", False, False)], 0.0, 2)
    'no job moved for a minute; waiting for groq/m: requests/day until 01:00:00 UTC (in 1h)'
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

STALL_S = 60.0


@dataclass(frozen=True)
class TargetWait:
    """One target of the batch, as the quota engine sees it now."""

    target: str
    granted: bool
    wait_s: float
    limit: str | None
    never: bool
    full: bool
    """At its concurrency: every slot is in a call."""


def _in(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def explain(waits: list[TargetWait], now: float, live_workers: int) -> str:
    """One line: what holds the batch back (pure; ``now`` in epoch seconds)."""
    head = "no job moved for a minute; "
    if live_workers == 0:
        return head + "no worker is running (start `dispatch worker`)"
    if not waits:
        return head + "none of its targets is configured any more"
    if any(w.granted and not w.full for w in waits):
        return head + ("a target has quota now, but no call started: are workers for "
                       + ", ".join(sorted({w.target.split('/')[0] for w in waits}))
                       + " running?")
    parts = []
    for w in sorted(waits, key=lambda w: (w.never, w.wait_s)):
        if w.never:
            parts.append(f"{w.target}: never ({w.limit or 'the job exceeds a limit'})")
        elif w.full and w.granted:
            parts.append(f"{w.target}: every slot in a call")
        else:
            until = datetime.fromtimestamp(now + w.wait_s, UTC).strftime("%H:%M:%S UTC")
            parts.append(f"{w.target}: {w.limit or 'quota'} until {until} (in {_in(w.wait_s)})")
    return head + "waiting for " + "; ".join(parts)


def target_waits(rt, batch: str) -> list[TargetWait]:
    """Probe (without taking) each target of the batch's tags for one of its jobs."""
    from workers.quota.costs import estimate_cost

    info = rt.store.batch(batch) or {}
    cfg = rt.config
    refs = []
    for tag in json.loads(info.get("tags") or "[]"):
        refs += [r for r in cfg.routes.get(tag, []) if r not in refs]
    sample = rt.store.load(f"{batch}:0")
    body = sample.body if sample else {"messages": []}
    quota = rt.quota(info.get("simulated") == "1")
    out = []
    for ref in refs:
        try:
            target = cfg.target(ref)
        except KeyError:
            continue
        cost = estimate_cost(body, target.model, cfg.settings.quota, cfg.settings.jobs)
        probe = quota.probe(target, cost)
        busy = rt.r.zcard(rt.store.calling_key(ref)) + rt.r.zcount(  # gateway calls too
            rt.store.gwcalling_key(ref), time.time(), "+inf")
        out.append(TargetWait(ref, probe.granted, probe.wait_s, probe.limit, probe.never,
                              busy >= target.provider_config.concurrency))
    return out


def live_workers(rt) -> int:
    return sum(1 for _ in rt.r.scan_iter(f"{rt.namespace}:lease:*", count=1000))


class StallWatch:
    """Says why the batch waits once no job moved for ``STALL_S``, then once a minute."""

    def __init__(self, rt, batch: str, stall_s: float = STALL_S):
        self.rt, self.batch, self.stall_s = rt, batch, stall_s
        self._done = -1
        self._moved = self._said = time.monotonic()

    def check(self, done: int) -> str | None:
        now = time.monotonic()
        if done != self._done:
            self._done, self._moved = done, now
            return None
        if now - self._moved < self.stall_s or now - self._said < self.stall_s:
            return None
        self._said = now
        try:
            return explain(target_waits(self.rt, self.batch), time.time(),
                           live_workers(self.rt))
        except Exception as exc:  # a note for the user: never stop the run over it
            return f"no job moved for a minute (could not tell why: {exc})"
