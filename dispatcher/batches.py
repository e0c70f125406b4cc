"""Submitting batches to a cluster and collecting their results (I/O around the store).

    >>> batch_id = submit(specs, simulated=False, deadline_s=86400)   # doctest: +SKIP
    >>> write_batch_results(batch_id, "out.jsonl")                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from dispatcher.batchfile import JobSpec
from dispatcher.results import result_line, write_results
from workers.jobstore import TERMINAL, split_job_id


def submit(specs: list[JobSpec], *, simulated: bool, deadline_s: float, name: str = "",
           batch_id: str | None = None, priority: str = "normal") -> str:
    """Store the jobs, queue them, and move what can start now. Returns the batch id.

    The submitter hands the first jobs to idle targets itself (one hop less than asking a
    router first); the routers' pump tasks and release loop move the rest as capacity
    returns. A set the submitter emptied needs no pump task (a job put back later wakes
    the routers itself).
    """
    from workers.runtime import get_runtime
    from workers.tasks import kick, pumper

    rt = get_runtime()
    batch, sets = rt.store.create_batch(specs, simulated=simulated, deadline_s=deadline_s,
                                        name=name, batch_id=batch_id, priority=priority,
                                        weights=rt.config.settings.priorities)
    pumper().known_active(batch)
    waiting = set()
    for sig, (tag, targets) in sets.items():
        pumper().pump(sig, tag, targets, max_jobs=INLINE_DISPATCH)
        if rt.r.zcard(rt.store.wait_key(sig)):
            waiting.add(sig)
    kick(waiting, batch)  # only sets with jobs left: the rest are on their way already
    return batch


#: At most this many jobs per waiting set are handed out by the submitter itself.
INLINE_DISPATCH = 64


def to_result_line(batch: str, index: int, custom_id: str, state: str,
                   result: dict[str, Any] | None) -> dict[str, Any]:
    """The OpenAI batch output line of one job that ENDED (``state`` in ``TERMINAL``).

    A pending job has no line (OpenAI's output files hold finished requests only); asking
    for one is a bug (ValueError), so nothing can report a running job as ended.
    """
    if state not in TERMINAL:
        raise ValueError(f"job {index} of {batch} has not ended (state: {state})")
    result = result or {}
    dispatch = result.get("dispatch") or {}
    if "status_code" in result:
        body = result.get("body")
        request_id = body.get("id") if isinstance(body, dict) else None
        return result_line(custom_id, batch_id=batch, index=index,
                           status_code=result["status_code"], body=body, error=None,
                           request_id=request_id, dispatch=dispatch)
    error = result.get("error") or {  # an ended job always stores its result; be safe
        "code": state if state in ("expired", "cancelled") else "internal_error",
        "message": f"the job ended ({state}) without a stored result",
    }
    return result_line(custom_id, batch_id=batch, index=index, status_code=None, body=None,
                       error=error, request_id=None, dispatch=dispatch)


@dataclass
class Collected:
    """What a pass over a batch's jobs found: lines written, jobs not ended yet, and jobs
    whose record is gone (expired past ``jobs.retention_days``, or deleted)."""

    written: int = 0
    pending: int = 0
    missing: int = 0

    @property
    def complete(self) -> bool:
        return not self.pending and not self.missing


def result_lines(batch: str, tally: Collected | None = None) -> Iterator[dict[str, Any]]:
    """The output line of every ENDED job, in input order; the others are only counted
    in ``tally`` (a pending job is never reported as ended)."""
    from workers.runtime import get_runtime

    tally = tally if tally is not None else Collected()
    for index, custom_id, state, result in get_runtime().store.results(batch):
        if state in TERMINAL:
            tally.written += 1
            yield to_result_line(batch, index, custom_id, state, result)
        elif state == "missing":
            tally.missing += 1
        else:
            tally.pending += 1


EXIT_TIMEOUT = 124
"""``dispatch results --wait --timeout`` gave up before the batch ended (as timeout(1))."""


def wait_for_end(rt: Any, batch: str, console: Console, timeout_s: float | None) -> bool:
    """Follow ``batch`` (a progress line on ``console``) until every job has ended: True;
    or until ``timeout_s`` passes first: False. Ctrl-C propagates."""
    from dispatcher.progress import follow_batch

    end = None if timeout_s is None else time.monotonic() + timeout_s
    return follow_batch(rt, batch, console,  # its "workers died" hook is our stop condition
                        lambda: ["timeout"] if end is not None and time.monotonic() > end else [])


def write_batch_results(batch: str, out: str | Path) -> Collected:
    """Write the ended jobs' lines to ``out`` atomically; say what was left out."""
    tally = Collected()
    write_results(out, result_lines(batch, tally))
    return tally


def cancel(batch: str) -> int:
    """Cancel a batch: waiting jobs end as ``cancelled`` now, running ones finish first."""
    from workers.runtime import get_runtime

    rt = get_runtime()
    store = rt.store
    store.set_batch_status(batch, "cancelled")
    ended = 0
    for sig in store.waitsets():
        key = store.wait_key(sig)
        members = [m for m in rt.r.zrange(key, 0, -1) if split_job_id(m)[0] == batch]
        for jid in members:
            rt.r.zrem(key, jid)
            job = store.load(jid)
            if job and store.finish(job, "cancelled", {"error": {
                    "code": "cancelled", "message": "the batch was cancelled"}}):
                ended += 1
    return ended
