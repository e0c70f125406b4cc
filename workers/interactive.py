"""Interactive requests go first: a waiting HTTP request holds its target against batch jobs.

An interactive request that cannot start at once registers *demand* on the target it waits
for: a member of the sorted set ``{ns}:gw:demand:{target}`` scored by when the claim lapses
(``DEMAND_TTL_S``, refreshed while it waits; a gateway that dies leaves nothing behind for
longer). While any claim is live, the batch side treats the target as busy:

- the pump does not hand it new jobs (:func:`batch_delay`, called from ``Pumper._delay``);
- a call task about to take quota for a batch job puts the job back instead, and does not
  go on with the target's backlog (:func:`yields`, called from ``Caller``).

So when the target frees up, the interactive request takes the slot, and batch jobs resume
right after it; no quota is left idle (the same limits, only the order changes).

Quota taken here is marked as the ``interactive`` class: reservation ids start with
``RESERVATION_PREFIX`` (for priorities and reserves built on top).
"""

from __future__ import annotations

import time
import uuid

DEMAND_TTL_S = 3.0
"""How long one registration holds (a waiting request refreshes it at least every second)."""
PRIORITY = "interactive"
RESERVATION_PREFIX = "interactive-"


def demand_key(namespace: str, target: str) -> str:
    return f"{namespace}:gw:demand:{{{target.split('/', 1)[0]}}}:{target}"


def new_waiter() -> str:
    return uuid.uuid4().hex[:16]


def reservation_id() -> str:
    """A unique reservation id of the interactive class."""
    return RESERVATION_PREFIX + uuid.uuid4().hex


def register(r, namespace: str, target: str, waiter: str) -> None:
    """Claim ``target`` for ``waiter`` for the next ``DEMAND_TTL_S`` seconds."""
    key = demand_key(namespace, target)
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zadd(key, {waiter: now + DEMAND_TTL_S})
    pipe.pexpire(key, int(DEMAND_TTL_S * 1000) + 1000)
    pipe.execute()


def withdraw(r, namespace: str, targets: set[str], waiter: str) -> None:
    if not targets:
        return
    pipe = r.pipeline(transaction=False)
    for t in targets:
        pipe.zrem(demand_key(namespace, t), waiter)
    pipe.execute()


def waiting(r, namespace: str, target: str) -> bool:
    """Whether an interactive request is waiting for ``target`` right now."""
    return bool(r.zcount(demand_key(namespace, target), time.time(), "+inf"))


# -- the hooks the batch side calls (a few lines in workers/pump.py and workers/caller.py) --


def yields(rt, target: str) -> bool:
    """A batch job about to take ``target``'s quota should step aside (see module doc)."""
    return waiting(rt.r, rt.namespace, target)


def batch_delay(rt, target: str, delay: float | None) -> float | None:
    """The pump's delay for a batch job on ``target``: past the horizon while an
    interactive request waits for it (the job is not handed out; looked at again soon)."""
    if delay is None or not yields(rt, target):
        return delay
    return max(delay, rt.config.settings.routing.horizon_s + 0.001)
