"""Moving waiting jobs to provider queues exactly as fast as the targets can take them.

A job waits in Redis (a sorted set per list of eligible targets) until some target can
start it within ``routing.horizon_s``; only then is a call task published to that
provider's queue. So provider queues stay short, a preferred target that is saturated
spills over to the next one, and a backlog waiting hours for a daily reset costs no
worker memory, no redelivery and no busy loop. Quota itself is taken by the call task,
right before the request is sent.

    >>> pumper = Pumper(runtime, publish=lambda job_id, target: ...)   # doctest: +SKIP
    >>> pumper.pump(sig)        # -> seconds until this waiting set should be looked at again
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.routing import choose_target
from workers.quota.costs import estimate_cost

log = logging.getLogger("dispatch.pump")

IDLE_RECHECK_S = 5.0


def stale_after_s() -> float:
    """How long a handed-out job may stay silent before its worker is presumed dead.

    A call task holds its message at most the visibility timeout (after which the broker
    would redeliver it anyway); a little more, and the job store sweeps the job back.
    """
    from workers.celery_app import visibility_timeout

    vt = visibility_timeout()
    return vt + min(60.0, vt / 2)


def spacing_s(target, cost) -> float:
    """The steady-state time one job of ``cost`` occupies on ``target``'s rolling limits."""
    return max(
        (lim.per.seconds * cost.of(lim.unit) / lim.limit
         for _, lim in target.limits() if lim.per.rolling),
        default=0.0,
    )


@dataclass
class TargetView:
    """What the pump knows of one target for the job at the head of a waiting set."""

    key: str
    delay: float | None


class Pumper:
    """Dispatches the heads of waiting sets; one pumper per process, used by many threads."""

    def __init__(self, runtime, publish: Callable[[str, str], None]):
        self.rt = runtime
        self.publish = publish

    def _lock(self, sig: str) -> bool:
        return bool(self.rt.r.set(f"{self.rt.namespace}:lock:w:{sig}", "1", nx=True, px=10_000))

    def _unlock(self, sig: str) -> None:
        self.rt.r.delete(f"{self.rt.namespace}:lock:w:{sig}")

    def pump(self, sig: str, tag: str, targets: list[str], max_jobs: int = 500) -> float:
        """Dispatch as many head jobs as targets can start soon; return the next check delay."""
        if not self._lock(sig):
            return 0.2
        try:
            return self._pump(sig, tag, targets, max_jobs)
        finally:
            self._unlock(sig)

    def _pump(self, sig: str, tag: str, targets: list[str], max_jobs: int) -> float:
        store, cfg = self.rt.store, self.rt.config
        wait_key = store.wait_key(sig)
        routing = cfg.settings.routing
        for _ in range(max_jobs):
            head = self.rt.r.zrange(wait_key, 0, 0)
            if not head:
                return IDLE_RECHECK_S
            jid = head[0]
            job = store.load(jid)
            if job is None or job.ended or job.state != "waiting":
                self.rt.r.zrem(wait_key, jid)
                continue
            if job.deadline and time.time() > job.deadline:
                self.rt.r.zrem(wait_key, jid)
                store.finish(job, "expired", {"error": {"code": "expired",
                             "message": "the batch deadline passed before a target took it"}})
                continue
            if self._batch_cancelled(job.batch):
                self.rt.r.zrem(wait_key, jid)
                store.finish(job, "cancelled", {"error": {"code": "cancelled",
                             "message": "the batch was cancelled"}})
                continue
            views = self._views(job, targets)
            idx = choose_target([v.delay for v in views], routing.preference_delay_s)
            if idx is None:
                self.rt.r.zrem(wait_key, jid)
                store.finish(job, "failed", {"error": {"code": "no_target",
                             "message": "no enabled target can ever take this job"}})
                continue
            delay = views[idx].delay or 0.0
            if delay > routing.horizon_s:
                return max(0.05, min(delay - routing.horizon_s, IDLE_RECHECK_S))
            self._dispatch(job.id, views[idx].key, wait_key)
        return 0.0

    def _batch_cancelled(self, batch: str) -> bool:
        return self.rt.r.hget(self.rt.store.batch_key(batch), "status") == "cancelled"

    def _views(self, job, targets: list[str]) -> list[TargetView]:
        """How soon each target could start this job (None: it cannot take it)."""
        cfg, r, store = self.rt.config, self.rt.r, self.rt.store
        quota = self.rt.quota(job.simulated)
        pipe = r.pipeline(transaction=False)
        for key in targets:
            pipe.zcard(store.queued_key(key))
            pipe.zcard(store.calling_key(key))
        counts = pipe.execute()
        views = []
        for i, key in enumerate(targets):
            if key in job.excluded:
                views.append(TargetView(key, None))
                continue
            queued, calling = counts[2 * i], counts[2 * i + 1]
            target = cfg.target(key)
            cost = estimate_cost(job.body, target.model, cfg.settings.quota, cfg.settings.jobs)
            probe = quota.probe(target, cost, count=queued + 1)
            if probe.granted:
                delay = 0.0
            elif not probe.never:
                delay = probe.wait_s
            elif queued == 0:
                delay = None
            else:  # the jobs queued ahead cannot all fit one window: they go one by one
                alone = quota.probe(target, cost)
                delay = None if alone.never else alone.wait_s + queued * spacing_s(target, cost)
            if delay is not None and queued + calling >= target.provider_config.concurrency:
                delay = max(delay, cfg.settings.routing.horizon_s + 0.001)
            views.append(TargetView(key, delay))
        return views

    def _dispatch(self, jid: str, target: str, wait_key: str) -> None:
        """Publish first, then leave the waiting set: a crash in between duplicates, never loses."""
        store, r = self.rt.store, self.rt.r
        r.zadd(store.queued_key(target), {jid: time.time()})
        store.mark(jid, state="dispatched", target=target)
        self.publish(jid, target)
        r.zrem(wait_key, jid)
