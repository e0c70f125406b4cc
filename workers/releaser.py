"""The router's background loop: pump waiting sets when they can move, sleep otherwise."""

from __future__ import annotations

import logging
import threading
import time

import redis

from workers.pump import stale_after_s

log = logging.getLogger("dispatch.releaser")

MAX_SLEEP_S = 5.0
WAITSETS_REFRESH_S = 1.0
SWEEP_EVERY_S = 5.0


def release_loop(rt, pumper, stop: threading.Event) -> None:
    """Pump each waiting set when it is due; block on the wake list in between."""
    store = rt.store
    due: dict[str, float] = {}
    sets: dict[str, tuple[str, list[str]]] = {}
    sets_at = swept_at = 0.0
    stale = stale_after_s()
    targets = [t.key for t in rt.config.targets()]
    while not stop.is_set():
        try:
            now = time.monotonic()
            if now - swept_at > SWEEP_EVERY_S:
                swept_at = now
                if store.sweep(targets, stale):
                    sets_at = 0.0
            if now - sets_at > WAITSETS_REFRESH_S:
                sets, sets_at = store.waitsets(), now
            for sig, (tag, targets) in sets.items():
                if due.get(sig, 0.0) <= now:
                    due[sig] = time.monotonic() + pumper.pump(sig, tag, targets)
            soonest = min(due.values(), default=now + MAX_SLEEP_S)
            timeout = min(MAX_SLEEP_S, max(0.01, soonest - time.monotonic()))
            woke = rt.r.blpop([store.wake_key], timeout=timeout)
            if woke:
                more = rt.r.lpop(store.wake_key, 1000) or []
                for sig in {woke[1], *more}:
                    due[sig] = 0.0
                    if sig not in sets:
                        sets_at = 0.0
        except redis.RedisError as exc:
            log.warning("releaser: Redis unavailable (%s); retrying", exc)
            stop.wait(1.0)
        except Exception:  # keep the router alive; the error is logged with its traceback
            log.exception("releaser: unexpected error")
            stop.wait(1.0)
