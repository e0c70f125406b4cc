"""One call task: take quota, call the upstream, decide what the outcome means.

The decisions (what a 429, a 5xx or a 401 does to the job and the target) are the table
in :func:`next_step`, a pure function; :class:`Caller` does the I/O around it.

Outcome → step:

- success → the job completes;
- 429 → the target (or the whole provider) cools down; the job waits again, no attempt counted;
- 5xx, timeout, connection error → retry on the same target with backoff, then the next target;
- 401/403 → the provider's circuit opens (loudly); 404 → the target's circuit opens;
  413, an unsupported parameter, no vision → the next target;
- context overflow → only targets with a larger window;
- any other 4xx → the job fails at once with the upstream's error.

A body the target's dialect certainly refuses (``n > 1`` on Groq, ``logprobs``: the
adapter's ``incompatibility``) is not sent at all: the job routes past the target before
any quota is taken (validation and the pump skip such targets too).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis

from dispatcher.config.secrets import redact
from workers import attempt, interactive, metrics
from workers.liveness import lease_of
from workers.providers.adapters import refusal
from workers.providers.images import ImageInlineError
from workers.providers.outcomes import (
    JobRejected,
    RateLimited,
    Success,
    TargetRejected,
    Transient,
)
from workers.quota.costs import max_tokens_sent, requested_max_tokens
from workers.usage import usage_writer

log = logging.getLogger("dispatch.call")

AUTH_CIRCUIT_S = 3600.0
NOT_FOUND_CIRCUIT_S = 3600.0
DEFAULT_429_COOLDOWN_S = 5.0


@dataclass(frozen=True)
class Step:
    """What to do after an outcome."""

    action: Literal["complete", "fail", "retry", "next_target", "wait_again"]
    exclude: tuple[str, ...] = ()
    count_attempt: bool = True


def backoff_s(retry: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential backoff with full jitter: 0.5, 1, 2, 4 … s, capped."""
    return random.uniform(0, min(cap, base * (2**retry)))


def next_step(outcome: Any, target: str, retries_here: int, max_retries: int,
              windows: dict[str, int]) -> Step:
    """The pure outcome table (see the module docstring)."""
    if isinstance(outcome, Success):
        return Step("complete")
    if isinstance(outcome, RateLimited):
        return Step("wait_again", count_attempt=False)
    if isinstance(outcome, Transient):
        if retries_here < max_retries:
            return Step("retry")
        return Step("next_target", exclude=(target,))
    if isinstance(outcome, TargetRejected):
        if outcome.kind == "context_overflow":
            mine = windows.get(target, 0)
            return Step("next_target", exclude=tuple(t for t, w in windows.items() if w <= mine))
        return Step("next_target", exclude=(target,))
    if isinstance(outcome, JobRejected):
        return Step("fail")
    return Step("next_target", exclude=(target,))


def react(quota, target, outcome: Any) -> None:
    """What an outcome does to the target, whoever made the call (a call task or the HTTP
    gateway): a 429 cools it down (or closes it until the calendar reset), a rejected key
    opens the provider's circuit, a 404 the model's."""
    if isinstance(outcome, RateLimited):
        if outcome.daily:  # spent until the calendar reset: the month's, if it says so
            per = "month" if "month" in outcome.message.lower() else "day"
            quota.close_until_reset(target, per, outcome.scope, redact(outcome.message)[:200])
        else:
            wait = outcome.retry_after_s
            if wait is None:
                wait = DEFAULT_429_COOLDOWN_S
            quota.cooldown(target, max(0.05, wait), outcome.scope, redact(outcome.message)[:200])
    elif isinstance(outcome, TargetRejected) and outcome.kind == "auth":
        log.error("provider %s rejected its key (%s %s): its circuit is open for %ds; "
                  "check %s", target.provider, outcome.status, redact(outcome.message),
                  AUTH_CIRCUIT_S, target.provider_config.api_key_env)
        quota.cooldown(target, AUTH_CIRCUIT_S, "provider", "key rejected")
    elif isinstance(outcome, TargetRejected) and outcome.kind == "not_found":
        log.error("target %s answered 404 (retired model?): circuit open", target.key)
        quota.cooldown(target, NOT_FOUND_CIRCUIT_S, "model", "model not found")


def _error_body(body: Any) -> Any:
    return body if isinstance(body, dict) else {"error": {"message": str(body)[:2000]}}


def shutting_down() -> bool:
    """Whether this worker was asked to stop (then a call task starts no further job)."""
    from celery.worker import state

    return any(flag is not None and flag is not False
               for flag in (state.should_stop, state.should_terminate))


#: Outcomes after which a call task may go on with its target's backlog.
CHAINABLE = frozenset({"completed", "cancelled", "expired"})


class Caller:
    """Runs one ``dispatch.call`` task against the shared :class:`~workers.runtime.Runtime`.

    After its job completes, the task goes on with the next job its target is the first
    choice for (``routing.chain_max_jobs`` / ``chain_max_s``), in the same concurrency slot:
    under a backlog, most jobs then cost no routing hop and no Celery message of their own.
    """

    def __init__(self, runtime):
        self.rt = runtime
        self._holding: str | None = None
        """The job whose slot on the target this task holds (``None``: given back)."""
        self._next: tuple[Any, str | None] = (None, None)
        self._served = 0
        self._started = time.monotonic()
        self._me = ""
        self._target = ""
        self._leased: list[str] = []

    def run(self, job_id: str, target_key: str, ticket: int | None = None) -> dict[str, Any]:
        """Serve the job, then the target's backlog; returns the first job's outcome.

        A message that is not the job's latest hand-out (redelivered after the job was put
        back, re-claimed or served) does nothing: see ``start.lua``.
        """
        store = self.rt.store
        self._started = time.monotonic()
        lease = lease_of(self.rt)
        self._me = lease.id
        self._target = target_key
        first: dict[str, Any] | None = None
        job = None
        try:
            job, batch_status, claimed = store.start(job_id, target_key, self._me, ticket)
            if not claimed:
                state = job.state if job else "unknown"
                return {"job": job_id, "status": "stale message", "state": state}
            self._holding = job_id
            self._hold(lease, job_id)
            while True:
                self._served += 1
                out = self._serve(job_id, job, batch_status, target_key)
                first = first or out
                if (self._next[0] is None and self._holding and out["status"] in CHAINABLE
                        and self._may_chain(target_key)):
                    self._carry(store.next_job(self._holding, target_key,
                                               self.rt.sigs_first(target_key),
                                               self.rt.sigs_with(target_key), holder=self._me))
                job, batch_status = self._next
                self._next = (None, None)
                if job is None:
                    break
                job_id = job.id
                self._hold(lease, job_id)
        except BaseException as exc:
            self._put_back(job, exc)
            raise
        finally:
            try:
                if self._holding:
                    store.release(self._holding, target_key, self.rt.sigs_with(target_key),
                                  self._me)
            finally:  # after the release: until then the job is this process's
                for jid in self._leased:
                    lease.drop(jid)
        return {**first, "served": self._served} if self._served > 1 else first

    def _hold(self, lease, jid: str) -> None:
        """List ``jid`` in this process's lease while this task runs it."""
        lease.hold(jid)
        self._leased.append(jid)

    def _carry(self, taken: tuple[Any, str | None]) -> None:
        """The job store handed this task the next job (or none: the slot was given back)."""
        self._next = taken
        self._holding = taken[0].id if taken[0] else None

    def _put_back(self, job, exc: BaseException) -> None:
        """The task fails with this job unfinished: it waits again (a chained job has no
        message to be redelivered) — unless it crashed ``max_crashes`` times: then it ends
        ``failed`` with ``internal_error``, never sent again forever. A worker stopping
        (not an ``Exception``, or Redis going away) is no fault of the job: it only waits
        again. When Redis cannot take it back, it is given back once Redis answers."""
        held = next((j for j in (self._next[0], job) if j is not None
                     and j.id == self._holding), None)
        if held is None:
            return
        try:
            if isinstance(exc, Exception) and not isinstance(exc, redis.RedisError):
                reason = redact(f"{type(exc).__name__}: {exc}")
                ended = self.rt.store.crashed(
                    held, reason, self.rt.config.settings.reliability.max_crashes, self._me)
                log.warning("job %s: its call crashed (%s); %s", held.id, reason,
                            "it ends failed (internal_error)" if ended == 2 else "it waits again")
            else:  # Redis went away, or the worker stops: no fault of the job
                self.rt.store.park(held, self._me)
        except redis.RedisError as exc2:
            log.warning("job %s: could not put it back (%s); it is, once Redis answers",
                        held.id, exc2)
            self.rt.store.put_back_later(held, self._target, self._me)
            self._holding = None

    def _may_chain(self, target_key: str | None = None) -> bool:
        routing = self.rt.config.settings.routing
        return (self._served < routing.chain_max_jobs
                and time.monotonic() - self._started < routing.chain_max_s
                and not shutting_down()
                and not (target_key and interactive.yields(self.rt, target_key)))

    def _serve(self, job_id: str, job, batch_status: str | None,
               target_key: str) -> dict[str, Any]:
        if job is None or job.ended:
            return {"job": job_id, "status": "already ended" if job else "unknown"}
        ending = None
        if batch_status == "cancelled":
            ending = ("cancelled", "the batch was cancelled")
        elif job.deadline and time.time() > job.deadline:
            ending = ("expired", "the batch deadline passed before a target took it")
        if ending:
            self.rt.store.finish(job, ending[0], {"error": {"code": ending[0],
                                                            "message": ending[1]}})
            return {"job": job.id, "status": ending[0]}
        return self._run(job, target_key)

    def _run(self, job, target_key: str) -> dict[str, Any]:
        rt, store, cfg = self.rt, self.rt.store, self.rt.config
        target = cfg.target(target_key)
        quota = rt.quota(job.simulated)
        pc = target.provider_config
        refused = refusal(target, job.body)
        if refused:  # a certain 400: route past it before taking quota or calling
            return self._requeue(job, (target_key,), None, refused)
        try:
            ready = attempt.prepare(rt, target, job.body, job.simulated)
        except ImageInlineError as exc:  # this target cannot take the image: route elsewhere
            return self._requeue(job, (target_key,), None, str(exc))
        windows = {k: cfg.target(k).model.context_window for k in job.remaining_targets}
        horizon = cfg.settings.routing.horizon_s
        retries_here = 0
        last: Any = None
        while True:
            if ready.base_url is None or ready.api_key is None:
                return self._requeue(job, (target_key,), last, "target unavailable")
            if interactive.yields(rt, target_key):  # an HTTP request waits: it goes first
                return self._requeue(job, (), last, "an interactive request is waiting")
            asked_at = time.monotonic()
            res = quota.reserve(target, ready.cost)
            if not res.granted:
                metrics.record_refusal(target_key, res.limit)
                if res.never:
                    return self._requeue(job, (target_key,), last, res.limit or "never fits")
                if res.wait_s <= horizon:
                    time.sleep(res.wait_s)
                    continue
                return self._requeue(job, (), last, f"waiting for {res.limit}")
            outcome, latency = attempt.send(rt, ready, res.reservation_id, asked_at,
                                            defer_success_usage=True)
            step = next_step(outcome, target_key, retries_here, pc.max_retries, windows)
            if step.count_attempt:
                job.attempts += 1
            react(quota, target, outcome)
            last = (outcome, latency, target_key)
            if step.action == "complete":
                return self._complete(job, outcome, latency, target_key)
            if step.action == "fail":
                return self._fail_with(job, outcome, latency, target_key)
            store.mark(job.id, attempts=job.attempts)
            if step.action == "retry":
                retries_here += 1
                time.sleep(backoff_s(retries_here))
                continue
            if job.attempts >= cfg.settings.jobs.max_attempts:
                return self._fail_with(job, outcome, latency, target_key)
            return self._requeue(job, step.exclude, last, type(outcome).__name__)

    # -- helpers ----------------------------------------------------------------------
    def _dispatch_block(self, job, target_key: str | None, latency: float | None) -> dict:
        provider, _, model = (target_key or "").partition("/")
        block: dict[str, Any] = {
            "provider": provider or None,
            "model": model or None,
            "attempts": job.attempts,
            "latency_ms": round(latency * 1000, 1) if latency is not None else None,
        }
        if job.simulated:
            block["simulated"] = True
        if target_key:  # say what was sent when it is not what the job asked for
            sent = max_tokens_sent(job.body, self.rt.config.target(target_key).model,
                                   self.rt.config.settings.jobs)
            if sent != requested_max_tokens(job.body):
                block["max_tokens_sent"] = sent
        return block

    def _complete(self, job, outcome: Success, latency: float, target_key: str) -> dict:
        result = {
            "status_code": outcome.status,
            "body": outcome.body,
            "dispatch": {**self._dispatch_block(job, target_key, latency),
                         "usage": outcome.usage},
        }
        self._carry(self.rt.store.finish_and_next(
            job, result, target_key.split("/", 1)[0], target_key,
            self.rt.sigs_first(target_key), self.rt.sigs_with(target_key),
            take=self._may_chain(target_key),
            also=usage_writer(self.rt, target_key, outcome.usage, job.simulated),
            holder=self._me))
        return {"job": job.id, "status": "completed", "target": target_key}

    def _fail_with(self, job, outcome: Any, latency: float | None, target_key: str) -> dict:
        """Fail with the last upstream error, or ``retries_exhausted`` when none answered."""
        status = getattr(outcome, "status", None)
        body = getattr(outcome, "body", None)
        result: dict[str, Any] = {"dispatch": self._dispatch_block(job, target_key, latency)}
        if status is not None and body is not None:
            result.update(status_code=status, body=_error_body(body))
        else:
            result["error"] = {
                "code": "retries_exhausted",
                "message": redact(getattr(outcome, "message", "") or "no answer from any target"),
            }
        self.rt.store.finish(job, "failed", result, target_key.split("/", 1)[0])
        return {"job": job.id, "status": "failed", "target": target_key}

    def _requeue(self, job, exclude: tuple[str, ...], last: Any, why: str) -> dict:
        job.excluded = sorted({*job.excluded, *exclude})
        if not job.remaining_targets:
            if last is not None:
                outcome, latency, tk = last
                return self._fail_with(job, outcome, latency, tk)
            result = {
                "error": {"code": "rejected_by_all_targets", "message": why},
                "dispatch": self._dispatch_block(job, None, None),
            }
            self.rt.store.finish(job, "failed", result)
            return {"job": job.id, "status": "failed"}
        self.rt.store.park(job)
        return {"job": job.id, "status": "waiting", "why": why}
