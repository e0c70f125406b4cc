"""One interactive request from validation to an outcome: choose, wait, reserve, call, decide.

The same rules as a batch job, from the same modules: eligibility from
:mod:`dispatcher.batchfile`, :func:`~dispatcher.routing.choose_target`, the quota engine,
:func:`workers.attempt.prepare`/:func:`~workers.attempt.send` (the one attempt path) and
the outcome table :func:`workers.caller.next_step` with its side effects
(:func:`workers.caller.react`). What differs is only *where* it waits: here, in the
request, ahead of batch jobs (:mod:`workers.interactive`), up to a deadline.

The blocking parts (Redis scripts, the upstream call) run in a worker thread, reservation
and send together, so the time between taking quota and sending stays short and steady.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.batchfile import JobSpec
from dispatcher.gateway import usage
from dispatcher.gateway.errors import ApiError
from dispatcher.routing import choose_target
from workers import attempt, interactive
from workers.caller import backoff_s, next_step, react
from workers.providers.outcomes import JobRejected, RateLimited, Success, TargetRejected
from workers.quota.classes import INTERACTIVE
from workers.quota.costs import Cost
from workers.quota.engine import QuotaUnavailable
from workers.slots import Slot

Chunk = Callable[[str, dict[str, Any]], None]
"""Receives ``(target, chunk)`` for each streamed chunk, in the calling thread."""


@dataclass(frozen=True)
class Called:
    """An attempt reached the upstream (or failed trying): its outcome."""

    target: str
    outcome: Any
    latency_s: float


@dataclass(frozen=True)
class Wait:
    """No target can start now: ``target`` (the routing choice) in ``wait_s``; the soonest
    of all eligible targets in ``soonest_s`` (what a 429's Retry-After says)."""

    target: str
    wait_s: float
    soonest_s: float


@dataclass(frozen=True)
class NoneLeft:
    """No eligible target is left (all excluded by failures, or none can ever fit)."""


@dataclass
class Result:
    """The final answer: a 2xx completion and who served it."""

    outcome: Success
    target: str
    attempts: int


def record_usage(gw, result: Result) -> None:
    """The served call's usage for ``dispatch report`` (written in batches, see
    :mod:`dispatcher.gateway.usage`): the attempt path defers it so the answer goes out
    first."""
    usage.BUFFER.add(gw.rt, result.target, result.outcome.usage, gw.simulate)


def step(gw, spec: JobSpec, excluded: set[str], stream: bool,
         on_chunk: Chunk | None) -> Called | Wait | NoneLeft:
    """Choose a target and, when it can start now, reserve and call it (blocking).

    The routing rule (:func:`~dispatcher.routing.choose_target`) takes the first target
    free within the preference delay, so each target in turn is simply *offered* the
    reservation: granted, it is the choice (every target before it is further off than the
    preference delay); refused, its wait is its delay. One round trip per target looked
    at (the quota script and the concurrency slot together, :func:`_take`), none spent on
    probing first. The slot is held for the whole call and given back however it ends.
    """
    cfg, quota = gw.config, gw.quota()
    within = cfg.settings.routing.preference_delay_s
    remaining = [t for t in spec.targets if t not in excluded]
    delays: list[float | None] = [None] * len(remaining)
    for i, key in enumerate(remaining):
        target = cfg.target(key)
        ready = attempt.prepare(gw.rt, target, spec.body, gw.simulate)
        if ready.base_url is None or ready.api_key is None:
            excluded.add(key)  # disabled since validation (a base_url variable went away)
            continue
        if stream:
            ready = dataclasses.replace(ready, body={
                **ready.body, "stream": True, "stream_options": {"include_usage": True}})
        got = _take(gw, quota, target, ready.cost)
        if isinstance(got, Taken):
            try:
                forward = None if on_chunk is None else functools.partial(on_chunk, key)
                outcome, latency = attempt.send(gw.rt, ready, got.reservation_id, got.asked_at,
                                                defer_success_usage=True, on_chunk=forward)
            finally:  # success, error, exception, a client gone mid-stream: all end here
                gw.rt.slots.free(got.slot)
            react(quota, target, outcome)
            return Called(key, outcome, latency)
        delays[i] = got
        if delays[i] is not None and delays[i] <= within:
            break
    idx = choose_target(delays, within)
    if idx is None:
        return NoneLeft()
    return Wait(remaining[idx], delays[idx] or 0.0, min(d for d in delays if d is not None))


SLOT_WAIT_S = 0.025
"""The delay a target at its concurrency presents: how often a request waiting for one of
its slots asks again (small: a call ending frees one at any moment; positive: within the
preference delay, so routing waits for the preferred target as it would for its quota)."""


@dataclass(frozen=True)
class Taken:
    """Quota and a concurrency slot, both taken: the call may start."""

    slot: Slot
    reservation_id: str
    asked_at: float
    """``time.monotonic()`` just before the reservation was asked for."""


def _take(gw, quota, target, cost) -> Taken | float | None:
    """The quota reservation and a concurrency slot on ``target``, both or neither:
    :class:`Taken` when the call may start, else the target's delay (None: never).

    One round trip: the slot script rides with the reservation. A mixed answer is settled
    here: a slot without quota is given back; quota without a slot is given back whole
    (as for a request that never left), unless the slot was only held by this process's
    own release on its way. While the target was just found full, the slot is asked for
    alone first, so a request polling a full target reserves (and gives back) nothing."""
    slots, key = gw.rt.slots, target.key
    slot = slots.new(key, target.provider_config)
    rid = interactive.reservation_id()
    res = None
    try:
        if slots.recently_full(key):
            if not (slots.take(slot) or (slots.settle(key) and slots.take(slot))):
                slots.mark_full(key)
                return SLOT_WAIT_S
            took = True
            asked_at = time.monotonic()
            # Interactive class: may use the share of calendar limits kept from batch jobs.
            res = quota.reserve(target, cost, rid, klass=INTERACTIVE)
        else:
            asked_at = time.monotonic()
            res, reply = quota.reserve_along(target, cost, slots.take_call(slot), rid,
                                             klass=INTERACTIVE)
            if isinstance(reply, Exception):
                raise QuotaUnavailable(f"concurrency slot: {reply}")
            took = reply == 1
            if took:
                slots.held(slot)
            elif res.granted and slots.settle(key):
                took = slots.take(slot)
    except BaseException:
        slots.free(slot)  # taken or not: removing it is harmless
        if res is not None and res.granted:
            with contextlib.suppress(QuotaUnavailable):
                quota.reconcile(res.reservation_id, Cost(0, 0, 0))
        raise
    if res.granted and took:
        return Taken(slot, res.reservation_id, asked_at)
    if took:
        slots.free(slot)
    elif res.granted:
        quota.reconcile(res.reservation_id, Cost(0, 0, 0))
    if res.never:
        return None
    if not took:
        slots.mark_full(key)
        return max(SLOT_WAIT_S, 0.0 if res.granted else res.wait_s)
    return res.wait_s


def retry_after(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds - 1e-9)))


async def run(gw, spec: JobSpec, max_wait_s: float, stream: bool = False,
              on_chunk: Chunk | None = None,
              started: Callable[[], bool] | None = None,
              progress: dict[str, int] | None = None) -> Result:
    """Serve one request to a 2xx outcome, or raise :class:`ApiError`.

    ``started()`` says whether streamed chunks already reached the client (then no other
    target may be tried: the answer has begun). ``progress["attempts"]`` is kept at the
    number the attempt under way will have (for a stream's headers)."""
    progress = progress if progress is not None else {}
    cfg = gw.config
    deadline = time.monotonic() + max_wait_s
    excluded: set[str] = set()
    retries: dict[str, int] = {}
    attempts = 0
    last: Called | None = None
    waiter = ""  # named when it first has to wait
    claimed: set[str] = set()
    windows = {k: cfg.target(k).model.context_window for k in spec.targets}
    try:
        while True:
            progress["attempts"] = attempts + 1
            got = await gw.blocking(step, gw, spec, excluded, stream, on_chunk)
            if isinstance(got, NoneLeft):
                raise _give_up(last, spec)
            if isinstance(got, Wait):
                left = deadline - time.monotonic()
                if got.soonest_s > left:
                    raise ApiError(
                        429, f"no capacity for {spec.pinned or spec.tag!r} within "
                        f"{max_wait_s:g}s (next in ~{got.soonest_s:.1f}s)",
                        "rate_limit_exceeded", type_="rate_limit_error",
                        headers={"Retry-After": retry_after(got.soonest_s)})
                waiter = waiter or interactive.new_waiter()
                interactive.register(gw.r, gw.namespace, got.target, waiter)
                claimed.add(got.target)
                await asyncio.sleep(min(max(got.wait_s, 0.005), 1.0))
                continue
            last = got
            pc = cfg.target(got.target).provider_config
            decided = next_step(got.outcome, got.target, retries.get(got.target, 0),
                                pc.max_retries, windows)
            if decided.count_attempt:
                attempts += 1
            if decided.action == "complete":
                return Result(got.outcome, got.target, attempts)
            if decided.action == "fail" or (started is not None and started()):
                raise _upstream_error(got)
            if decided.action == "retry":
                retries[got.target] = retries.get(got.target, 0) + 1
                await asyncio.sleep(backoff_s(retries[got.target]))
            elif decided.action == "next_target":
                excluded.update(decided.exclude)
            if attempts >= cfg.settings.jobs.max_attempts:
                raise _upstream_error(got)
    finally:
        if claimed:
            interactive.withdraw(gw.r, gw.namespace, claimed, waiter)


def _give_up(last: Called | None, spec: JobSpec) -> ApiError:
    if last is not None:
        return _upstream_error(last)
    return ApiError(400, f"no enabled target of {spec.pinned or spec.tag!r} can take this "
                    "request", "no_target")


def _upstream_error(called: Called) -> ApiError:
    """The upstream's own 4xx when the request itself was refused (bad parameters, too
    large, no vision); 502 when the fault is ours or the upstream's (a rejected key, a
    retired model, 5xx, no answer)."""
    o = called.outcome
    status = getattr(o, "status", None)
    message = getattr(o, "message", "") or "no answer"
    headers = {"X-Dispatch-Target": called.target}
    if isinstance(o, JobRejected | TargetRejected) and status and 400 <= status < 500 \
            and status not in (401, 402, 403, 404, 429):
        return ApiError(status, f"{called.target}: {message}", "upstream_rejected",
                        headers=headers)
    if isinstance(o, RateLimited):
        return ApiError(429, f"{called.target}: {message}", "rate_limit_exceeded",
                        headers={**headers, "Retry-After": retry_after(o.retry_after_s or 1)})
    return ApiError(502, f"{called.target}: {message}", "upstream_error",
                    type_="server_error", headers=headers)
