"""Moving waiting jobs to provider queues exactly as fast as the targets can take them.

A job waits in Redis (a sorted set per list of eligible targets) until some target can
start it within ``routing.horizon_s``; only then is a call task published to that
provider's queue. So provider queues stay short, a preferred target that is saturated
spills over to the next one, and a backlog waiting hours for a daily reset costs no
worker memory, no redelivery and no busy loop. Quota itself is taken by the call task,
right before the request is sent.

    >>> pumper = Pumper(runtime, publish=lambda job, target: ...)   # doctest: +SKIP
    >>> pumper.pump(sig, tag, targets)  # -> seconds until it should be looked at again
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dispatcher.routing import choose_target
from workers import interactive
from workers.liveness import holder_id
from workers.providers.adapters import refusal
from workers.quota.limits import charge_scale

log = logging.getLogger("dispatch.pump")

IDLE_RECHECK_S = 5.0
HEADS_PER_READ = 16


def stale_after_s() -> float:
    """How long a held job naming no holder (stored before worker leases) may stay silent
    before its worker is presumed dead: the visibility timeout, plus a little."""
    from workers.celery_app import visibility_timeout

    vt = visibility_timeout()
    return vt + min(60.0, vt / 2)


def spacing_s(target, cost) -> float:
    """The steady-state time one job of ``cost`` occupies on ``target``'s rolling limits."""
    return max(
        (lim.per.seconds * cost.of(lim.unit) / (lim.limit * charge_scale(lim.unit))
         for _, lim in target.limits() if lim.per.rolling),
        default=0.0,
    )


class Pumper:
    """Dispatches the heads of waiting sets; one pumper per process, used by many threads."""

    def __init__(self, runtime, publish: Callable[[Any, str, int], None]):
        self.rt = runtime
        self.publish = publish
        self._status: dict[str, tuple[float, bool]] = {}

    def _lock_key(self, sig: str) -> str:
        return f"{self.rt.namespace}:lock:w:{sig}"

    def pump(self, sig: str, tag: str, targets: list[str], max_jobs: int = 500) -> float:
        """Dispatch as many head jobs as targets can start soon; return the next check delay."""
        pipe = self.rt.r.pipeline(transaction=False)
        pipe.set(self._lock_key(sig), "1", nx=True, px=10_000)
        self._count(pipe, targets)
        locked, *counts = pipe.execute()
        if not locked:
            return 0.2
        try:
            return self._pump(sig, tag, targets, max_jobs, self._busy(targets, counts))
        finally:
            self.rt.r.delete(self._lock_key(sig))

    def known_active(self, batch: str) -> None:
        """The batch was just created (not cancelled): spare the status read."""
        self._status[batch] = (time.monotonic(), False)

    def _pump(self, sig: str, tag: str, targets: list[str], max_jobs: int,
              busy: dict[str, tuple[int, int]]) -> float:
        store, cfg, r = self.rt.store, self.rt.config, self.rt.r
        wait_key = store.wait_key(sig)
        routing = cfg.settings.routing
        done = 0
        while done < max_jobs:
            if done:
                busy = self._occupancy(targets)
            free = sum(max(0, self._concurrency(t) - used) for t, (_, used) in busy.items())
            if free == 0:
                return IDLE_RECHECK_S  # every target is at its concurrency: a release wakes us
            wanted = min(HEADS_PER_READ, free)
            heads = store.heads(sig, wanted)
            if not heads:
                return IDLE_RECHECK_S
            for job_id, job in heads:
                done += 1
                if job is None or job.ended or job.state != "waiting":
                    r.zrem(wait_key, job_id)
                    continue
                ending = self._ending(job, self._cancelled(job.batch))
                if ending:
                    r.zrem(wait_key, job_id)
                    store.finish(job, ending[0], {"error": {"code": ending[0],
                                                            "message": ending[1]}})
                    continue
                delays = self._delays(job, targets, busy, routing.preference_delay_s)
                idx = choose_target(delays, routing.preference_delay_s)
                if idx is None:
                    r.zrem(wait_key, job_id)
                    store.finish(job, "failed", {"error": self._no_target(job, targets)})
                    continue
                delay = delays[idx] or 0.0
                if delay > routing.horizon_s:  # the head waits: so does everything behind it
                    return max(0.05, min(delay - routing.horizon_s, IDLE_RECHECK_S))
                if not self._dispatch(job, targets[idx], wait_key):
                    break  # the target filled up since it was counted: count again
                queued, used = busy[targets[idx]]
                busy[targets[idx]] = (queued + 1, used + 1)
            if len(heads) < wanted:  # the set was emptied: no need to read it again
                return IDLE_RECHECK_S
        return 0.0

    def _cancelled(self, batch: str) -> bool:
        """Whether a batch was cancelled, re-read at most once a second per batch."""
        now = time.monotonic()
        known = self._status.get(batch)
        if known is None or now - known[0] > 1.0:
            if len(self._status) > 10_000:
                self._status.clear()
            known = (now, self.rt.store.batch_status(batch) == "cancelled")
            self._status[batch] = known
        return known[1]

    def _concurrency(self, key: str) -> int:
        return self.rt.config.target(key).provider_config.concurrency

    def _occupancy(self, targets: list[str]) -> dict[str, tuple[int, int]]:
        """(queued, used) per target: jobs handed to its provider and not released /
        concurrency slots in use, by batch jobs and by the HTTP gateway's calls (its live
        slots, workers/slots.py)."""
        pipe = self.rt.r.pipeline(transaction=False)
        self._count(pipe, targets)
        return self._busy(targets, pipe.execute())

    def _count(self, pipe: Any, targets: list[str]) -> None:
        for key in targets:
            self.rt.store.read_occupancy(pipe, key)

    def _busy(self, targets: list[str], counts: list[int]) -> dict[str, tuple[int, int]]:
        n = self.rt.store.OCCUPANCY_READS
        return {key: self.rt.store.occupancy_of(counts[n * i:n * (i + 1)])
                for i, key in enumerate(targets)}

    @staticmethod
    def _ending(job, batch_cancelled: bool) -> tuple[str, str] | None:
        if batch_cancelled:
            return "cancelled", "the batch was cancelled"
        if job.deadline and time.time() > job.deadline:
            return "expired", "the batch deadline passed before a target took it"
        return None

    def _delays(self, job, targets: list[str], busy: dict[str, tuple[int, int]],
                preference_delay_s: float) -> list[float | None]:
        """How soon each target could start this job (None: never), in preference order.

        Computed lazily: the routing rule takes the first target within the preference
        delay, so the targets after it need not be asked.
        """
        delays: list[float | None] = [None] * len(targets)
        for i, key in enumerate(targets):
            if key in job.excluded or refusal(self.rt.config.target(key), job.body):
                continue
            delays[i] = self._delay(job, key, *busy[key])
            if delays[i] is not None and delays[i] <= preference_delay_s:
                break
        return delays

    def _no_target(self, job, targets: list[str]) -> dict[str, str]:
        """The error of a job no target will ever take: the providers' refusals, if any."""
        cfg = self.rt.config
        whys = sorted({f"{why} ({key})" for key in targets if key not in job.excluded
                       and (why := refusal(cfg.target(key), job.body))})
        if whys:
            return {"code": "rejected_by_all_targets", "message": "; ".join(whys)}
        return {"code": "no_target", "message": "no enabled target can ever take this job"}

    def _delay(self, job, key: str, queued: int, used: int) -> float | None:
        """``queued``: jobs handed to ``key`` that may still reserve (started or not: a
        started job may not have reserved yet, so the probe counts it); ``used``: its
        concurrency slots in use."""
        cfg = self.rt.config
        horizon = cfg.settings.routing.horizon_s
        target = cfg.target(key)
        full = used >= target.provider_config.concurrency
        quota = self.rt.quota(job.simulated)
        cost = quota.learner.estimate(target, job.body)[0]  # the cost the call will reserve
        probe = quota.probe(target, cost, count=queued + 1)
        if probe.granted:
            delay: float | None = 0.0
        elif not probe.never:
            delay = probe.wait_s
        elif queued == 0:
            delay = None
        else:  # the jobs queued ahead cannot all pass at once: they go one by one
            alone = quota.probe(target, cost)
            step = spacing_s(target, cost)
            if alone.never:
                delay = None
            elif step > 0:
                delay = alone.wait_s + queued * step
            else:  # a calendar limit: look again once the jobs ahead have taken theirs
                delay = horizon + 0.001
        if delay is not None and full:
            delay = max(delay, horizon + 0.001)
        return interactive.batch_delay(self.rt, key, delay)

    def _dispatch(self, job, target: str, wait_key: str) -> bool:
        """Hand the job to ``target`` and publish its call task; False when ``target``
        reached its concurrency since it was counted (the job keeps waiting).

        The hand-out is atomic: a call task going on with its target's backlog may have
        taken this head meanwhile, and then nothing is published; a gateway call (or
        another waiting set's pump) may have taken the last slot. The job is held by this
        process's lease until a call task claims it: a crash between the hand-out and the
        publish leaves it in the queued set with no message, and the sweep puts it back
        once this process's lease lapsed (or after ``handout_timeout_s``); nothing is lost.
        """
        ticket = self.rt.store.handout(job, target, wait_key, holder_id(self.rt),
                                       self._concurrency(target))
        if ticket > 0:
            self.publish(job, target, ticket)
        return ticket >= 0
