"""The router's background loop: pump waiting sets when they can move, sleep otherwise.

Every ``SWEEP_EVERY_S`` it also sweeps every configured target for jobs whose holder's
lease lapsed (a dead worker's jobs wait again) and ends the waiting jobs of batches past
their deadline, wherever they wait.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from workers.pump import stale_after_s

log = logging.getLogger("dispatch.releaser")

MAX_SLEEP_S = 5.0
WAITSETS_REFRESH_S = 1.0
SWEEP_EVERY_S = 2.0


def sweep_once(rt) -> bool:
    """One sweep over EVERY target and every batch past its deadline; True if a job moved."""
    store = rt.store
    # every configured target, and any a waiting set still names (a model since removed)
    all_targets = sorted({t.key for t in rt.config.targets()}
                         | {t for _, ts in store.waitsets().values() for t in ts})
    handed, running, poisoned = store.sweep(all_targets, rt.config.settings.reliability,
                                            stale_after_s())
    if handed or running or poisoned:
        log.warning("sweep: %d handed-out and %d running job(s) of dead workers wait again; "
                    "%d ended as poison (internal_error)", handed, running, poisoned)
    expired = store.expire_due()
    if expired:
        log.info("sweep: %d waiting job(s) past their batch's deadline ended expired", expired)
    return bool(handed or running or poisoned or expired)


def release_loop(rt, pumper, stop: threading.Event) -> None:
    """Pump each waiting set when it is due; block on the wake list in between."""
    store = rt.store
    due: dict[str, float] = {}
    sets: dict[str, tuple[str, list[str]]] = {}
    sets_at = swept_at = 0.0
    while not stop.is_set():
        try:
            now = time.monotonic()
            if now - swept_at > SWEEP_EVERY_S:
                swept_at = now
                if sweep_once(rt):
                    sets_at = 0.0
            if now - sets_at > WAITSETS_REFRESH_S:
                sets, sets_at = store.waitsets(), now
            for sig, (tag, targets) in sets.items():
                if due.get(sig, 0.0) <= now:
                    due[sig] = time.monotonic() + pumper.pump(sig, tag, targets)
            soonest = min(due.values(), default=now + MAX_SLEEP_S)
            timeout = min(MAX_SLEEP_S, max(0.01, soonest - time.monotonic()),
                          max(0.01, swept_at + SWEEP_EVERY_S - time.monotonic()))
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
